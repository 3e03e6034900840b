"""The hosted PostgREST's settings that the stand-in copies (Supabase's defaults)."""

from __future__ import annotations

SCHEMA = "public"
EXPOSED_SCHEMAS = (SCHEMA,)
ANON_ROLE = "anon"
API_ROLES = frozenset({"anon", "authenticated", "service_role"})
MAX_ROWS = 1000  # Supabase runs PostgREST with PGRST_DB_MAX_ROWS=1000
JWT_SKEW_S = 30  # PostgREST's allowed clock skew for exp/nbf/iat
SEARCH_PATH = "public, extensions"
