"""Local Supabase stand-in: Postgres, PostgREST and Realtime subsets. The relay never imports it."""
