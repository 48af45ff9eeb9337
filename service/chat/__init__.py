"""The OpenAI chat wire models, the chat serving layer and its metrics."""
