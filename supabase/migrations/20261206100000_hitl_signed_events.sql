-- Database broadcasts carry proof that the database made them.
--
-- Realtime delivers a client's broadcast on a topic exactly like `realtime.send`'s: an operator
-- whose token may send on `case:%` can send a `message` shaped like the trigger's. So every
-- `message`, `session` and `case_opened` the triggers send now carries `sig`: HMAC-SHA256, keyed
-- with a secret only the database and the relay (service role) can read, over a canonical string
-- of the event's fields (hitl_relay/adapters/signed_events.py builds the same string). The relay
-- takes an event as the committed row only when `sig` verifies; anything else is a wake-up that
-- makes it read the case (hitl_case_reply).
--
-- HMAC is built on the core `sha256(bytea)` (PostgreSQL 11+) as RFC 2104 defines it, with the
-- key's inner and outer pads computed once: no dependency on pgcrypto, which hosted Supabase
-- installs in schema `extensions` and a platform database may not have at all.
--
-- Canonical string: the event name, then for each signed field in order, a line
--   <field>=<n>:<text>   (n = the number of characters of <text>, payload ->> field)
--   <field>=-            (the field is null or absent)
-- joined with '\n'. Length prefixes make it unambiguous whatever the content holds. Fields are
-- the payload's own text values (`payload ->> field`), not Postgres's JSON rendering.

create table if not exists public.hitl_event_key (
  id smallint primary key default 1 check (id = 1),
  key bytea not null check (octet_length(key) = 32),
  inner_pad bytea not null check (octet_length(inner_pad) = 64),
  outer_pad bytea not null check (octet_length(outer_pad) = 64),
  created_at timestamptz not null default now()
);
alter table public.hitl_event_key enable row level security;
-- No policy: nobody but the owner and the service role (which bypasses RLS) reads it; the
-- default privileges of a hosted project grant anon/authenticated table rights, taken back here.
revoke all on table public.hitl_event_key from public, anon, authenticated;

-- The key's RFC 2104 pads (key zero-padded to the 64-byte SHA-256 block, XOR 0x36 / 0x5c).
create or replace function public.hitl_event_key_pad(p_key bytea, p_byte integer) returns bytea
language plpgsql immutable set search_path = '' as $$
declare
  v bytea := p_key || decode(repeat('00', 64 - octet_length(p_key)), 'hex');
begin
  for i in 0 .. 63 loop
    v := set_byte(v, i, get_byte(v, i) # p_byte);
  end loop;
  return v;
end;
$$;
revoke all on function public.hitl_event_key_pad(bytea, integer) from public, anon, authenticated;

do $$
declare
  -- gen_random_uuid() draws from the server's strong random source (pg_strong_random):
  -- two of them, without their version/variant nibbles' predictability mattering for 32 bytes
  -- holding 244 random bits.
  v_key bytea := decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''),
                        'hex');
begin
  insert into public.hitl_event_key (id, key, inner_pad, outer_pad)
  values (1, v_key, public.hitl_event_key_pad(v_key, 54), public.hitl_event_key_pad(v_key, 92))
  on conflict (id) do nothing;
end
$$;

-- The relay reads the key once at start (service role only).
create or replace function public.hitl_event_key() returns text
language sql stable security definer set search_path = '' as $$
  select encode(key, 'hex') from public.hitl_event_key where id = 1
$$;
revoke all on function public.hitl_event_key() from public, anon, authenticated;
grant execute on function public.hitl_event_key() to service_role;

create or replace function public.hitl_event_canonical(p_event text, p_payload jsonb,
                                                       p_fields text[]) returns text
language sql immutable set search_path = '' as $$
  select p_event || coalesce(string_agg(
    E'\n' || f || '=' || case when p_payload ->> f is null then '-'
                              else length(p_payload ->> f)::text || ':' || (p_payload ->> f) end,
    '' order by n), '')
  from unnest(p_fields) with ordinality as t(f, n)
$$;
revoke all on function public.hitl_event_canonical(text, jsonb, text[])
  from public, anon, authenticated;

-- The payload plus its `sig`. Never callable by clients: whoever can call it can forge events.
create or replace function public.hitl_sign_event(p_event text, p_payload jsonb,
                                                  p_fields text[]) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  k record;
  v_msg bytea := convert_to(public.hitl_event_canonical(p_event, p_payload, p_fields), 'UTF8');
begin
  select inner_pad, outer_pad into k from public.hitl_event_key where id = 1;
  if not found then
    return p_payload;  -- no key: the relay reads every event's case instead (still correct)
  end if;
  return p_payload || jsonb_build_object('sig',
    encode(sha256(k.outer_pad || sha256(k.inner_pad || v_msg)), 'hex'));
end;
$$;
revoke all on function public.hitl_sign_event(text, jsonb, text[])
  from public, anon, authenticated, service_role;

-- A message's id and time are the database's. Operators insert directly (PostgREST, role
-- `authenticated`); whatever they send for `id` or `created_at` is replaced. The relay's own
-- inserts run inside its security definer functions (role of the function owner).
create or replace function public.hitl_message_defaults() returns trigger
language plpgsql set search_path = '' as $$
begin
  if current_user in ('authenticated', 'anon') then
    new.id := gen_random_uuid();
    new.created_at := now();
  end if;
  return new;
end;
$$;

create or replace trigger hitl_message_defaults
  before insert on public.messages
  for each row execute function public.hitl_message_defaults();

-- Operators never change a message after the fact either (ids and times stay the database's).
revoke update on table public.messages from anon, authenticated;

create or replace function public.hitl_on_message() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_is_answer boolean := false;
begin
  if new.sender_type = 'human' and new.kind in ('answer', 'cannot_answer') then
    update public.cases
       set answer_message_id = new.id,
           status = case when status = 'open' then 'answered' else status end,
           answered_at = coalesce(answered_at, now())
     where id = new.case_id and answer_message_id is null;
    v_is_answer := found;
  end if;
  perform realtime.send(
    public.hitl_sign_event('message', jsonb_build_object(
      'id', new.id, 'case_id', new.case_id, 'sender_type', new.sender_type,
      'sender_id', new.sender_id, 'content', new.content, 'kind', new.kind,
      'created_at', new.created_at, 'is_answer', v_is_answer),
      array['id', 'case_id', 'sender_type', 'sender_id', 'content', 'kind', 'created_at',
            'is_answer']),
    'message', 'case:' || new.case_id::text, true);
  return null;
end;
$$;

create or replace function public.hitl_on_session_change() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  perform realtime.send(
    public.hitl_sign_event('session', jsonb_build_object(
      'session_id', new.id, 'case_id', new.case_id, 'status', new.status,
      'expires_at', new.expires_at),
      array['session_id', 'case_id', 'status', 'expires_at']),
    'session', 'case:' || new.case_id::text, true);
  return null;
end;
$$;

-- `thread` (a JSON array) is not signed: its text is Postgres's JSON rendering, which a reader
-- cannot rebuild byte for byte. The console reads the thread from the case row.
create or replace function public.hitl_on_case_opened() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  perform realtime.send(
    public.hitl_sign_event('case_opened', jsonb_build_object(
      'case_id', new.id, 'priority', new.priority, 'urgency', new.urgency,
      'question', new.description, 'title', new.title,
      'deadline_at', new.metadata ->> 'deadline_at', 'expires_at', new.expires_at,
      'retell_call_id', new.metadata ->> 'retell_call_id', 'source', new.source),
      array['case_id', 'priority', 'urgency', 'question', 'title', 'deadline_at', 'expires_at',
            'retell_call_id', 'source'])
      || jsonb_build_object('thread', coalesce(new.metadata -> 'thread', '[]'::jsonb)),
    'case_opened', 'operators', true);
  return null;
end;
$$;

-- API keys are scoped: a case belongs to the relay key that opened it. The relay makes the
-- idempotency key of a case it opens for a key `<key fingerprint>:<call id>:<sha256 of the
-- question>` (a retry with the same key joins the same case; another key asking the same
-- question in the same call gets its own), and asks this before reading or continuing a case
-- for a key. Unknown and foreign cases answer alike (false).
create or replace function public.hitl_case_owned(p_case_id uuid, p_owner text) returns boolean
language sql stable security definer set search_path = '' as $$
  select exists (
    select 1 from public.hil_sessions
     where case_id = p_case_id and starts_with(idempotency_key, p_owner || ':'))
$$;
revoke all on function public.hitl_case_owned(uuid, text) from public, anon, authenticated;
grant execute on function public.hitl_case_owned(uuid, text) to service_role;

-- A session's status as committed: the relay reads it before ending a wait on a `session` event
-- (a genuine event of the session's earlier life, replayed after a retry re-opened it, must not
-- end the new wait).
create or replace function public.hitl_session_status(p_session_id uuid) returns text
language sql stable security definer set search_path = '' as $$
  select status from public.hil_sessions where id = p_session_id
$$;
revoke all on function public.hitl_session_status(uuid) from public, anon, authenticated;
grant execute on function public.hitl_session_status(uuid) to service_role;

-- The schema version is the newest migration's (see 20261125002300_hitl_schema_version.sql).
create or replace function public.hitl_schema_version()
returns text
language sql
immutable
set search_path = ''
as $$ select '20261206100000'::text $$;

revoke all on function public.hitl_schema_version() from public, anon, authenticated;
grant execute on function public.hitl_schema_version() to service_role;
