"""The ports' implementations: Supabase (`supabase.py`, production) and the in-memory twin
(`memory.py`, tests and demos). `hitl_relay.composition.open_backend` picks one."""
