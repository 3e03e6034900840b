"""hitl-relay: a voice agent asks a human operator, mid-call, and gets the answer in real time."""

__version__ = "0.1.0"
