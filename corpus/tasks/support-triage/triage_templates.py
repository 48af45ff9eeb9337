# ruff: noqa: E501  (templates are prose; wrapping them would hide what a message reads like)
"""Phrasings and slot fillers for the support-triage generator; every pool is split train/held-out.

A `Pool` keeps the training and held-out phrasings apart, so no held-out message is built from a
template, opener, filler or product spelling the training split ever used (product spellings are the
one exception: held-out mixes training spellings with spellings of its own).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pool:
    """Phrasings for the training split and, disjoint from them, for the held-out split."""

    train: tuple[str, ...]
    heldout: tuple[str, ...]

    def __post_init__(self) -> None:
        shared = set(self.train) & set(self.heldout)
        if shared:
            raise ValueError(f"phrasings in both splits: {sorted(shared)}")

    def for_split(self, split: str) -> tuple[str, ...]:
        """The phrasings a split may use."""
        return self.train if split == "train" else self.heldout


@dataclass(frozen=True)
class Intent:
    """One kind of request: its fixed labels and the templates that express it."""

    name: str
    category: str
    priority: str  # before the amount and repeat-contact rules
    needs_human: bool
    templates: Pool
    products: tuple[str, ...] = ()  # products a `{product}` slot may name
    amount_rule: bool = False  # a disputed charge: >= $100 is high, below is normal


ALL = (
    "aurora-k3",
    "aurora-k5-pro",
    "toaster-t2",
    "brewer-c7",
    "hub-h1",
    "scale-s4",
    "sous-vide-sv1",
)
KETTLES = ("aurora-k3", "aurora-k5-pro")

# Spellings per product: training spellings, and extra spellings only the held-out split uses.
PRODUCT_SPELLINGS: dict[str, Pool] = {
    "aurora-k3": Pool(
        ("Aurora K3", "K3 kettle", "Aurora K3 kettle", "aurora k3", "K3", "BW-K3-1170"),
        ("Aurora K-3", "BW-K3-1171", "AuroraK3", "entry-level Aurora kettle"),
    ),
    "aurora-k5-pro": Pool(
        ("Aurora K5 Pro", "K5 Pro", "K5 Pro gooseneck kettle", "aurora k5 pro", "AK5P-220"),
        ("Aurora K5-Pro", "BW-K5-2208", "K5Pro", "Aurora gooseneck"),
    ),
    "toaster-t2": Pool(
        ("Ember T2", "T2 toaster", "Ember T2 toaster", "ember t2", "ET2-404"),
        ("Ember T-2", "BW-T2-4041", "EmberT2", "Ember two-slot toaster"),
    ),
    "brewer-c7": Pool(
        ("Cascade C7", "C7 coffee maker", "C7 brewer", "cascade c7", "CC7-310"),
        ("Cascade C-7", "BW-C7-3105", "CascadeC7", "Cascade drip coffee maker"),
    ),
    "hub-h1": Pool(
        ("Lantern H1", "H1 hub", "Lantern H1 hub", "lantern h1", "LH1-900"),
        ("Lantern H-1", "LH1-900B", "LanternH1", "Lantern smart-home hub"),
    ),
    "scale-s4": Pool(
        ("Plumbline S4", "S4 scale", "S4 kitchen scale", "plumbline s4", "PS4-120"),
        ("Plumbline S-4", "BW-S4-1204", "PlumblineS4", "Plumbline kitchen scale"),
    ),
    "sous-vide-sv1": Pool(
        ("Tidewell SV1", "SV1 sous vide", "SV1 circulator", "tidewell sv1", "TSV1-815"),
        ("Tidewell SV-1", "BW-SV1-8150", "TidewellSV1", "Tidewell immersion circulator"),
    ),
}

# What goes wrong, per product, as a verb phrase after "the <product>".
SYMPTOMS: dict[str, Pool] = {
    "aurora-k3": Pool(
        (
            "shows error E-09",
            "keeps showing E-21",
            "shows E-24 and won't join the Wi-Fi",
            "takes ages to boil and shows E-12",
            "fails its firmware update with E-40",
        ),
        (
            "shows E-28 every morning",
            "won't hold the temperature I set",
            "flashes E-44 after updates",
        ),
    ),
    "aurora-k5-pro": Pool(
        (
            "shows error E-09",
            "keeps showing E-21",
            "won't pair over Bluetooth",
            "fails its firmware update with E-40",
            "shows E-24 and won't join the Wi-Fi",
        ),
        (
            "shows E-28 every morning",
            "resets the brew stopwatch at random",
            "flashes E-44 after updates",
        ),
    ),
    "toaster-t2": Pool(
        (
            "ignores the browning level I set",
            "stopped sending pop-up notifications",
            "won't show up in the app",
            "lost its usage history",
        ),
        ("keeps forgetting the bagel setting", "drops off the hub every night"),
    ),
    "brewer-c7": Pool(
        (
            "didn't start the scheduled brew",
            "reports the wrong water level in the app",
            "won't pair with the hub",
            "says there is no filter when there is one",
        ),
        ("brews weak coffee even on Bold", "skips the bloom phase even though it is on"),
    ),
    "hub-h1": Pool(
        (
            "blinks fast red all the time",
            "doesn't run my routines",
            "keeps rebooting",
            "won't go into pairing mode",
        ),
        ("is stuck on a slow amber pulse", "forgets my devices after a power cut"),
    ),
    "scale-s4": Pool(
        (
            "drifts by several grams",
            "never shows PASS when I calibrate",
            "won't connect to the app",
            "switches itself off mid-pour",
        ),
        ("shows a different weight every time", "stopped charging over USB-C"),
    ),
    "sous-vide-sv1": Pool(
        (
            "shows LO-W even when the pot is full",
            "won't switch to Fahrenheit",
            "drops off Wi-Fi during long cooks",
            "won't start a 30-hour cook from the app",
        ),
        ("stops circulating halfway through a cook", "reads two degrees too low"),
    ),
}

# Hazards, per product, as a verb phrase after "the <product>".
HAZARDS: dict[str, Pool] = {
    "aurora-k3": Pool(
        (
            "lid flew open while pouring and burned my hand",
            "started smoking from the base",
            "gave me an electric shock when I touched the handle",
        ),
        ("spat boiling water and scalded my arm", "made a popping noise and the base caught fire"),
    ),
    "aurora-k5-pro": Pool(
        (
            "started smoking from the base",
            "gave me an electric shock when I touched the handle",
            "base is scorched and smells like burning",
        ),
        ("spat boiling water and scalded my arm", "sent sparks out of the base socket"),
    ),
    "toaster-t2": Pool(
        ("caught fire", "is sparking inside", "stayed down and filled the kitchen with smoke"),
        ("had flames coming out of the slots", "melted the cabinet above it"),
    ),
    "brewer-c7": Pool(
        (
            "smells of burning plastic and the cord is melting",
            "sparked when I plugged it in",
            "started smoking under the cabinet",
        ),
        (
            "tripped the breaker with a bang and a flash",
            "leaked hot water onto the socket and sparked",
        ),
    ),
    "hub-h1": Pool(
        ("power adapter got so hot it melted", "started smoking", "burned my finger, it is so hot"),
        ("gives off a burning smell and the case is scorched", "made sparks near the USB-C port"),
    ),
    "scale-s4": Pool(
        ("battery is swollen and very hot", "started smoking while charging"),
        ("got too hot to touch while charging and smells burnt", "has a bulging, hissing battery"),
    ),
    "sous-vide-sv1": Pool(
        (
            "gave me an electric shock when I touched the water",
            "cord started smoking",
            "melted the side of the pot",
        ),
        ("shocked me through the clip", "threw sparks when it hit the water"),
    ),
}

# How-to requests, per product, as a verb phrase after "how do I".
HOWTOS: dict[str, Pool] = {
    "aurora-k3": Pool(
        ("descale", "add a custom temperature preset", "clear a stuck error code"),
        ("set the keep-warm time", "clean the mesh filter"),
    ),
    "aurora-k5-pro": Pool(
        ("use the brew stopwatch", "load the pour-over recipes", "descale"),
        ("set a temperature of 92 degrees", "swap in the walnut handle"),
    ),
    "toaster-t2": Pool(
        ("mute the toast notifications", "use bagel mode", "empty the crumb tray"),
        ("add it to a morning routine", "toast frozen bread"),
    ),
    "brewer-c7": Pool(
        (
            "schedule a brew for tomorrow morning",
            "turn off the bloom phase",
            "change the charcoal filter",
        ),
        ("pick the Bold strength", "mount it under a cabinet"),
    ),
    "hub-h1": Pool(
        ("mount it on the wall", "create a routine", "put it in pairing mode"),
        ("set it up as a satellite", "use the local API"),
    ),
    "scale-s4": Pool(
        ("calibrate", "switch to ounces", "use coffee mode"),
        ("weigh milk in millilitres", "stop the display turning off"),
    ),
    "sous-vide-sv1": Pool(
        ("switch to Fahrenheit", "clean the skirt", "set a timer"),
        ("store it properly", "use the cook library"),
    ),
}

COLOURS = {"aurora-k3": ("brushed steel", "matte slate"), "toaster-t2": ("cream", "graphite")}

INTENTS: tuple[Intent, ...] = (
    # billing: a disputed charge goes to a human, its priority set by the amount
    Intent(
        "double_charge",
        "billing",
        "normal",
        True,
        Pool(
            (
                "I was charged twice for my {product} order {order}. Each charge was {amount}. Please refund the duplicate.",
                "My card statement shows two payments of {amount} for order {order}. I only ordered once.",
                "You billed me {amount} two times for the same {product}. One of those needs to go back.",
                "Double charge on order {order}: {amount} taken twice on {date}.",
            ),
            (
                "Looking at my bank app, the {amount} payment for the {product} went through twice. Can you reverse one?",
                "Order {order} hit my account a second time for {amount}. I'd like the extra payment returned.",
            ),
        ),
        ALL,
        amount_rule=True,
    ),
    Intent(
        "wrong_charge",
        "billing",
        "normal",
        True,
        Pool(
            (
                "The {product} was listed cheaper but I was charged {amount} for order {order}. That's not what I agreed to.",
                "I got charged {amount} on {date} for order {order} and that is more than the checkout total.",
                "Why did you take {amount} from my card for the {product}? The checkout showed less.",
            ),
            (
                "Checkout total and what came off my card don't match: {amount} for the {product}. Please correct it.",
                "There's a {amount} debit from Brightwater on {date}, higher than the total of order {order}.",
            ),
        ),
        ALL,
        amount_rule=True,
    ),
    Intent(
        "unwanted_renewal",
        "billing",
        "normal",
        True,
        Pool(
            (
                "My Brightwater Club plan renewed on {date} and took {amount} even though I cancelled it.",
                "I cancelled Club Plus last month but you still charged me {amount}.",
                "Why was I billed {amount} for a Club renewal? I turned auto-renew off.",
            ),
            (
                "A membership fee of {amount} was taken on {date}, but I ended my membership weeks ago.",
                "Got a renewal receipt for {amount} for a subscription I had already stopped.",
            ),
        ),
        amount_rule=True,
    ),
    Intent(
        "invoice_request",
        "billing",
        "low",
        False,
        Pool(
            (
                "Could you send me a VAT invoice for order {order}?",
                "I need a receipt for the {product} I bought on {date} for my expenses.",
                "Can I get a PDF invoice for order {order}, please?",
            ),
            (
                "My accountant is asking for an itemised bill for order {order}. Where can I download it?",
                "Please email me a copy of the bill for the {product}; I lost the original.",
            ),
        ),
        ALL,
    ),
    Intent(
        "payment_method",
        "billing",
        "low",
        False,
        Pool(
            (
                "How do I change the card on file for my subscription?",
                "My credit card expired. Where do I update the payment method for my Club plan?",
            ),
            (
                "I'd like to switch my Club payments from Visa to PayPal. How?",
                "New bank card arrived; how do I put it on file so my membership keeps billing?",
            ),
        ),
    ),
    Intent(
        "price_match",
        "billing",
        "low",
        False,
        Pool(
            (
                "I saw the {product} cheaper at another shop for {amount}. Do you price match?",
                "Another retailer sells the {product} for {amount}. Can I get that price from you?",
            ),
            ("A competitor has the {product} at {amount}. Will you match that?",),
        ),
        ALL,
    ),
    # shipping
    Intent(
        "where_is_order",
        "shipping",
        "normal",
        False,
        Pool(
            (
                "Where is my order {order}? I ordered on {date} and tracking hasn't moved.",
                "My {product} still hasn't shipped. Order {order}, placed {days} days ago.",
                "Tracking for order {order} has said 'in transit' for {days} days. Any update?",
                "When will my {product} arrive? Order number {order}.",
            ),
            (
                "It's been {days} days since I paid for order {order} and the carrier page shows nothing new.",
                "No sign of the {product} yet. Could you check on order {order} for me?",
            ),
        ),
        ALL,
    ),
    Intent(
        "delivered_not_received",
        "shipping",
        "high",
        True,
        Pool(
            (
                "Tracking says order {order} was delivered on {date} but there was nothing at my door.",
                "The carrier marked my {product} as delivered but I never got it.",
                "Order {order} shows delivered, but no parcel arrived. My neighbours don't have it either.",
            ),
            (
                "According to the courier my {product} was dropped off on {date}. It is not here.",
                "Package for order {order} is listed as handed over, yet I have received nothing.",
            ),
        ),
        ALL,
    ),
    Intent(
        "damaged_in_transit",
        "shipping",
        "normal",
        True,
        Pool(
            (
                "My {product} arrived with the box crushed and the unit dented.",
                "Order {order} came today and the {product} inside is cracked from shipping.",
                "The parcel was soaked and torn when it arrived and the {product} has a broken handle.",
            ),
            (
                "Courier clearly dropped the box; the {product} came out in pieces.",
                "Opened order {order} to find the {product} scratched and bent. Packaging was smashed.",
            ),
        ),
        ALL,
    ),
    Intent(
        "shipping_question",
        "shipping",
        "low",
        False,
        Pool(
            (
                "Do you ship the {product} to {country}?",
                "How long does delivery usually take to {country}?",
                "How much is shipping for a {product} to {country}?",
            ),
            (
                "Is international delivery available to {country}, and roughly how many days?",
                "Thinking of buying the {product}. What are the delivery options to {country}?",
            ),
        ),
        ALL,
    ),
    Intent(
        "address_change",
        "shipping",
        "normal",
        False,
        Pool(
            (
                "I need to change the delivery address on order {order} before it ships.",
                "I typed the wrong street on order {order}. Can you update it to {address}?",
            ),
            (
                "Order {order} is going to my old flat. Please redirect it to {address}.",
                "Can the destination for my {product} order be switched to {address}?",
            ),
        ),
        ALL,
    ),
    # returns
    Intent(
        "return_howto",
        "returns",
        "low",
        False,
        Pool(
            (
                "How do I return the {product}? It's unopened.",
                "I want to send back my {product} that arrived on {date}. What are the steps?",
                "Can I return order {order}? I changed my mind.",
            ),
            (
                "The {product} isn't for me after all. What's the process to send it back?",
                "Please tell me how to ship order {order} back to you; it's still in the box.",
            ),
        ),
        ALL,
    ),
    Intent(
        "refund_overdue",
        "returns",
        "normal",
        True,
        Pool(
            (
                "I returned the {product} on {date} and still haven't received my refund.",
                "Your warehouse got my return for order {order} two weeks ago. Where is my refund?",
                "Refund for {rma} hasn't shown up on my card yet.",
            ),
            (
                "The parcel with the {product} reached you ages ago, yet no money has been credited back.",
                "I sent back order {order} on {date}; the refund is still missing.",
            ),
        ),
        ALL,
    ),
    Intent(
        "exchange_colour",
        "returns",
        "low",
        False,
        Pool(
            (
                "Can I swap my {product} for the {colour} finish?",
                "I'd like to exchange my {product} for a {colour} one instead.",
            ),
            (
                "Got the wrong finish. Is it possible to trade my {product} for the {colour} version?",
                "Would prefer {colour} over the colour I picked for the {product}. Exchange possible?",
            ),
        ),
        tuple(COLOURS),
    ),
    Intent(
        "late_return",
        "returns",
        "normal",
        True,
        Pool(
            (
                "I know it's been more than 42 days, but can I still return my {product}?",
                "The return window for order {order} closed last week. Any chance you'd accept it anyway?",
            ),
            (
                "I missed the return deadline for the {product} by a few days. Can you make an exception?",
                "Bought the {product} over two months ago and never used it. Too late to send it back?",
            ),
        ),
        ALL,
    ),
    # warranty
    Intent(
        "warranty_question",
        "warranty",
        "low",
        False,
        Pool(
            (
                "How long is the warranty on the {product}?",
                "Is limescale damage covered by the warranty on my {product}?",
                "Does registering my {product} extend the warranty?",
            ),
            (
                "What does the guarantee on a {product} actually cover?",
                "If I buy Brightwater Care for my {product}, how many years am I protected?",
            ),
        ),
        ALL,
    ),
    Intent(
        "defect_claim",
        "warranty",
        "normal",
        True,
        Pool(
            (
                "My {product} stopped working after {months} months. I'd like to make a warranty claim.",
                "The {product} I bought on {date} has died completely. I want it repaired or replaced under warranty.",
                "{product} broke within a year, serial {serial}. Please replace it under warranty.",
            ),
            (
                "Less than {months} months old and the {product} no longer powers on. I need a guarantee replacement.",
                "Faulty {product}: it quit on me {date}. Starting a guarantee claim, what do you need from me?",
            ),
        ),
        ALL,
    ),
    Intent(
        "claim_status",
        "warranty",
        "normal",
        False,
        Pool(
            (
                "Any update on warranty claim {claim}?",
                "I opened claim {claim} for my {product} last week and haven't heard back.",
            ),
            (
                "Checking in on {claim}: has a decision been made yet?",
                "What stage is my {product} guarantee case {claim} at?",
            ),
        ),
        ALL,
    ),
    Intent(
        "claim_denied",
        "warranty",
        "high",
        True,
        Pool(
            (
                "Your team rejected warranty claim {claim} for my {product}. I want this reviewed.",
                "Claim {claim} was denied and the reason makes no sense. I'd like to appeal.",
            ),
            (
                "You turned down {claim} for the {product}; I dispute that decision.",
                "The refusal on guarantee case {claim} is wrong, please have someone reconsider.",
            ),
        ),
        ALL,
    ),
    # technical
    Intent(
        "howto",
        "technical",
        "low",
        False,
        Pool(
            (
                "How do I {howto} on my {product}?",
                "What's the right way to {howto} with the {product}?",
                "Quick question: can you explain how to {howto} on the {product}?",
            ),
            (
                "Is there a guide for how to {howto} for the {product}?",
                "Need instructions to {howto}. I have the {product}.",
            ),
        ),
        ALL,
    ),
    Intent(
        "malfunction",
        "technical",
        "normal",
        False,
        Pool(
            (
                "My {product} {symptom}. What should I do?",
                "As of {date}, the {product} {symptom}. Help please.",
                "Having trouble: the {product} {symptom}.",
                "Since the last app update my {product} {symptom}.",
            ),
            (
                "Something's wrong with the {product}, it {symptom}. Any fix?",
                "Ever since {date}, the {product} {symptom}. Troubleshooting tips?",
            ),
        ),
        ALL,
    ),
    # account
    Intent(
        "password_reset",
        "account",
        "low",
        False,
        Pool(
            (
                "I forgot my password. How do I reset it?",
                "The password reset email never arrives at {email}.",
                "Can't remember my login password for the Brightwater app.",
            ),
            (
                "Need a new password for my Brightwater login, the old one is rejected.",
                "How can I set a fresh password? Signed up with {email}.",
            ),
        ),
    ),
    Intent(
        "change_email",
        "account",
        "low",
        False,
        Pool(
            (
                "Please change the email on my account from {email} to {email2}.",
                "How do I update my account email address?",
            ),
            (
                "I've got a new address for emails, {email2}. Can my profile use that instead of {email}?",
                "Want my login to be {email2} from now on.",
            ),
        ),
    ),
    Intent(
        "locked_out",
        "account",
        "normal",
        False,
        Pool(
            (
                "My account is locked after too many login attempts.",
                "I can't sign in, it says my account {email} is temporarily locked.",
            ),
            (
                "Too many wrong tries and now the app won't let me in at all.",
                "Login blocked for {email}, says wait and try later but it's been hours.",
            ),
        ),
    ),
    Intent(
        "delete_data",
        "account",
        "normal",
        True,
        Pool(
            (
                "Please delete my Brightwater account and all my data.",
                "Under privacy law I request a copy of all personal data you hold on {email}.",
            ),
            (
                "Close my profile permanently and erase everything linked to {email}.",
                "I want you to wipe my personal information from your systems.",
            ),
        ),
    ),
    Intent(
        "compromised",
        "account",
        "high",
        True,
        Pool(
            (
                "Someone logged into my account and changed my password. I didn't do that.",
                "There are orders on my account I never placed, like order {order}. I think I've been hacked.",
            ),
            (
                "I got a login alert from a city I've never been to and my shipping address was changed.",
                "A stranger seems to be using my Brightwater profile; order {order} wasn't me.",
            ),
        ),
    ),
    # safety: always urgent, always a human
    Intent(
        "hazard",
        "safety",
        "urgent",
        True,
        Pool(
            (
                "My {product} {hazard}!",
                "Urgent: the {product} {hazard}.",
                "I need help, my {product} {hazard} this morning.",
                "Is it safe to keep using the {product}? It {hazard}.",
            ),
            (
                "Please advise immediately: the {product} {hazard}.",
                "Scary moment today, the {product} {hazard}.",
            ),
        ),
        ALL,
    ),
    Intent(
        "recall_check",
        "safety",
        "urgent",
        True,
        Pool(
            (
                "Is my {product} affected by the recall? The batch code is {batch}.",
                "I saw news about a recall. My {product} label says {batch}. Is it included?",
            ),
            (
                "Does the safety notice apply to my {product}? Label says {batch}.",
                "Heard there's a recall on some units; should I stop using my {product} ({batch})?",
            ),
        ),
        ("aurora-k3", "toaster-t2"),
    ),
)

# A customer who has already been in touch: priority goes up one level and a human takes over.
REPEAT_CONTACT = Pool(
    (
        "This is the third time I'm writing about this.",
        "I already called twice and nobody fixed it.",
        "Second email about this, still no answer.",
        "I raised this last week and heard nothing.",
    ),
    (
        "I've reached out before and got nowhere.",
        "Your agent promised a callback that never came.",
        "Still waiting after my previous ticket.",
    ),
)

# Tone never changes a label; these only wrap the core message.
POLITE_OPENERS = Pool(
    ("Hi,", "Hello there,", "Good morning,", "Dear Brightwater team,"),
    ("Hey folks,", "Greetings,", "To whom it may concern,"),
)
POLITE_CLOSERS = Pool(
    ("Thanks!", "Thank you in advance.", "Best regards, {name}", "Many thanks, {name}"),
    ("Cheers, {name}", "Much appreciated.", "Kind wishes, {name}"),
)
ANGRY_OPENERS = Pool(
    ("This is ridiculous.", "I am really annoyed.", "Unacceptable service."),
    ("I'm fed up.", "Honestly, what a joke."),
)
ANGRY_CLOSERS = Pool(
    ("Sort it out.", "I expect a reply today!", "Very disappointed."),
    ("Get this fixed.", "Not happy at all!!"),
)
RAMBLING = Pool(
    (
        "I bought this after my sister recommended your brand.",
        "We just moved house so things are a bit chaotic here.",
        "I'm writing this on my phone during my lunch break.",
        "My partner and I cook a lot, so we use our appliances every day.",
        "Anyway, sorry, I got distracted by the dog.",
    ),
    (
        "My kids are home for the holidays so the kitchen is busy.",
        "I've been a customer since you opened the Duluth showroom.",
        "Sorry if this is long, I'm not great with emails.",
    ),
)
NAMES = Pool(("Maria", "Tom", "Priya", "Jonas", "Aiko", "Sam"), ("Lena", "Kofi", "Rosa", "Ivan"))
COUNTRIES = Pool(("Canada", "Mexico", "Germany", "Japan"), ("Australia", "Ireland", "Brazil"))
ADDRESSES = Pool(
    ("42 Elm Street, Duluth MN", "7 Harbor Road, Portland ME", "310 Lake Ave, Madison WI"),
    ("18 Birch Lane, Fargo ND", "55 Pine Court, Boise ID"),
)

# Training typos come from this table; held-out typos swap two letters instead.
TYPOS = {
    "please": "plz",
    "received": "recieved",
    "because": "becuase",
    "order": "ordr",
    "thanks": "thx",
    "you": "u",
    "your": "ur",
    "really": "realy",
    "return": "retrun",
    "warranty": "waranty",
    "account": "acount",
    "delivered": "deliverd",
    "password": "pasword",
    "charged": "chraged",
    "still": "stil",
    "what": "wat",
    "the": "teh",
    "since": "snice",
}
