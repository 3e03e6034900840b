"""Ports implementations: Supabase (production) and in-memory (tests)."""
