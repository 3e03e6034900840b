-- Supabase Realtime's database side as its tenant migrations leave it on a current hosted
-- project (supabase/realtime lib/realtime/tenants/repo/migrations/): the `realtime` schema,
-- `realtime.messages` partitioned by day and owned by `supabase_realtime_admin`, with
-- `binary_payload`; `realtime.topic()`, `realtime.send()`, `realtime.send_binary()` and
-- `realtime.broadcast_changes()`, owned by that role too. Run by the superuser; the file names
-- of the migrations each statement follows are beside it.
-- Realtime replicates inserts on `messages` logically; the devstack's Realtime stand-in
-- listens to the `hitl_realtime` NOTIFY below instead (delivered after commit, in commit order).

-- supabase/postgres migrations/db/migrations/20211118015519_create-realtime-schema.sql (created
-- by supabase_admin); 20260707120000_restrict_realtime_schema.ex: `postgres` gets USAGE with
-- grant option and no CREATE, and is no member of supabase_realtime_admin.
create schema if not exists realtime;
grant usage on schema realtime to postgres with grant option;
grant usage on schema realtime to anon, authenticated, service_role;
revoke create on schema realtime from postgres;

-- 20241030150047_messages_partitioning.ex, 20241108114728_messages_using_uuid.ex,
-- 20260514120000_add_binary_payload_to_messages.ex
create table if not exists realtime.messages (
  topic text not null,
  extension text not null,
  payload jsonb,
  event text,
  private boolean default false,
  updated_at timestamp without time zone not null default now(),
  inserted_at timestamp without time zone not null default now(),
  id uuid not null default gen_random_uuid(),
  binary_payload bytea,
  primary key (id, inserted_at)
) partition by range (inserted_at);
do $$
begin
  if not exists (select 1 from pg_constraint where conname = 'messages_payload_exclusive'
                 and conrelid = 'realtime.messages'::regclass) then
    alter table realtime.messages add constraint messages_payload_exclusive
      check (payload is null or binary_payload is null) not valid;
  end if;
end
$$;
alter table realtime.messages owner to supabase_realtime_admin;
alter table realtime.messages enable row level security;
grant select, insert, update on realtime.messages to postgres, anon, authenticated, service_role;
-- 20250905041441_create_messages_replay_index.ex
create index if not exists messages_inserted_at_topic_index
  on realtime.messages (inserted_at desc, topic) where extension = 'broadcast' and private is true;

-- Realtime's janitor creates the daily partitions from yesterday to three days ahead, owned by
-- supabase_realtime_admin (lib/realtime/tenants.ex create_messages_partitions/1). The devstack
-- runs this function when it lays out a database and whenever its Realtime stand-in starts.
create or replace function realtime.hitl_create_partitions() returns void
language plpgsql as $f$
declare
  d date;
  partition_name text;
begin
  for d in select generate_series(current_date - 1, current_date + 3, interval '1 day')::date loop
    partition_name := 'messages_' || to_char(d, 'YYYY_MM_DD');
    if to_regclass('realtime.' || partition_name) is null then
      execute format('create table realtime.%I partition of realtime.messages'
                     ' for values from (%L) to (%L)', partition_name, d, d + 1);
      execute format('alter table realtime.%I owner to supabase_realtime_admin', partition_name);
    end if;
  end loop;
end;
$f$;
revoke all on function realtime.hitl_create_partitions() from public;
select realtime.hitl_create_partitions();

-- 20240523004032_redefine_authorization_tables.ex
create or replace function realtime.topic() returns text language sql stable as $f$
  select nullif(current_setting('realtime.topic', true), '')::text
$f$;

-- 20260605120000_rename_broadcast_send_warning.ex
create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void language plpgsql as $f$
declare
  generated_id uuid;
  final_payload jsonb;
begin
  begin
    generated_id := gen_random_uuid();
    if payload ? 'id' then
      final_payload := payload;
    else
      final_payload := jsonb_set(payload, '{id}', to_jsonb(generated_id));
    end if;
    execute format('set local realtime.topic to %L', topic);
    insert into realtime.messages (id, payload, event, topic, private, extension)
    values (generated_id, final_payload, event, topic, private, 'broadcast');
  exception when others then
    raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
  end;
end;
$f$;

create or replace function realtime.send_binary(payload bytea, event text, topic text, private boolean default true)
returns void language plpgsql as $f$
declare
  generated_id uuid;
begin
  begin
    generated_id := gen_random_uuid();
    execute format('set local realtime.topic to %L', topic);
    insert into realtime.messages (id, binary_payload, event, topic, private, extension)
    values (generated_id, payload, event, topic, private, 'broadcast');
  exception when others then
    raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
  end;
end;
$f$;

-- 20240919163303_add_payload_to_messages.ex
create or replace function realtime.broadcast_changes(
  topic_name text, event_name text, operation text, table_name text, table_schema text,
  new record, old record, level text default 'ROW'
) returns void language plpgsql as $f$
declare
  row_data jsonb := '{}'::jsonb;
begin
  if level = 'STATEMENT' then
    raise exception 'function can only be triggered for each row, not for each statement';
  end if;
  if operation = 'INSERT' or operation = 'UPDATE' or operation = 'DELETE' then
    row_data := jsonb_build_object(
      'old_record', old, 'record', new, 'operation', operation,
      'table', table_name, 'schema', table_schema);
    perform realtime.send(row_data, event_name, topic_name);
  else
    raise exception 'Unexpected operation type: %', operation;
  end if;
exception when others then
  raise exception 'Failed to process the row: %', sqlerrm;
end;
$f$;

-- 20260707120000_restrict_realtime_schema.ex
alter function realtime.topic() owner to supabase_realtime_admin;
alter function realtime.send(jsonb, text, text, boolean) owner to supabase_realtime_admin;
alter function realtime.send_binary(bytea, text, text, boolean) owner to supabase_realtime_admin;
alter function realtime.broadcast_changes(text, text, text, text, text, record, record, text)
  owner to supabase_realtime_admin;

-- The devstack's delivery hook: NOTIFY carries the message (or, when too large for NOTIFY's
-- 8000-byte limit, its id) to the Realtime stand-in after the inserting transaction commits.
-- `at` (Unix seconds, when the row was inserted, inside its transaction) lets the stand-in time
-- its own share of a delivery, the commit included (hitl_devstack/hops.py).
create or replace function realtime.hitl_notify_message() returns trigger
language plpgsql as $f$
declare
  j text;
  at double precision := extract(epoch from clock_timestamp());
begin
  j := json_build_object('id', new.id, 'topic', new.topic, 'event', new.event,
                         'private', coalesce(new.private, false), 'payload', new.payload,
                         'at', at)::text;
  if octet_length(j) > 7800 then
    j := json_build_object('id', new.id, 'topic', new.topic, 'event', new.event,
                           'private', coalesce(new.private, false), 'too_large', true,
                           'at', at)::text;
  end if;
  perform pg_notify('hitl_realtime', j);
  return null;
end;
$f$;

create or replace trigger hitl_notify_message
  after insert on realtime.messages
  for each row when (new.extension = 'broadcast')
  execute function realtime.hitl_notify_message();
