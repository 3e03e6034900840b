"""Local Supabase stand-in: Postgres cluster, PostgREST subset, Realtime subset. Never imported by the relay."""
