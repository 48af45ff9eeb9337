"""Engines: the local transformers engine, the vLLM client and its server, token counting."""
