-- Supabase Realtime's database side (supabase/realtime priv/repo/tenant_schema/realtime/):
-- realtime.messages, realtime.topic(), realtime.send(), realtime.broadcast_changes().
-- Supabase partitions messages by day and replicates inserts logically; the devstack uses a
-- plain table and the `hitl_realtime` NOTIFY below (delivered after commit, in commit order).
create schema if not exists realtime;
grant usage on schema realtime to anon, authenticated, service_role;

create table if not exists realtime.messages (
  topic text not null,
  extension text not null,
  payload jsonb,
  event text,
  private boolean default false,
  updated_at timestamp without time zone not null default now(),
  inserted_at timestamp without time zone not null default now(),
  id uuid not null default gen_random_uuid(),
  primary key (id, inserted_at)
);
alter table realtime.messages enable row level security;
grant select, insert, update on realtime.messages to anon, authenticated, service_role;
create index if not exists messages_inserted_at_topic_index
  on realtime.messages (inserted_at desc, topic) where extension = 'broadcast' and private is true;

do $$
begin
  if to_regprocedure('realtime.topic()') is null then
    create function realtime.topic() returns text language sql stable as $f$
      select nullif(current_setting('realtime.topic', true), '')::text
    $f$;
  end if;

  if to_regprocedure('realtime.send(jsonb, text, text, boolean)') is null then
    create function realtime.send(payload jsonb, event text, topic text, private boolean default true)
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
  end if;

  if to_regprocedure('realtime.broadcast_changes(text, text, text, text, text, record, record, text)') is null then
    create function realtime.broadcast_changes(
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
  end if;
end
$$;

grant execute on function realtime.topic() to anon, authenticated, service_role;
grant execute on function realtime.send(jsonb, text, text, boolean) to anon, authenticated, service_role;

-- The devstack's delivery hook: NOTIFY carries the message (or, when too large for NOTIFY's
-- 8000-byte limit, its id) to the Realtime stand-in after the inserting transaction commits.
create or replace function realtime.hitl_notify_message() returns trigger
language plpgsql as $f$
declare
  j text;
begin
  j := json_build_object('id', new.id, 'topic', new.topic, 'event', new.event,
                         'private', coalesce(new.private, false), 'payload', new.payload)::text;
  if octet_length(j) > 7800 then
    j := json_build_object('id', new.id, 'topic', new.topic, 'event', new.event,
                           'private', coalesce(new.private, false), 'too_large', true)::text;
  end if;
  perform pg_notify('hitl_realtime', j);
  return null;
end;
$f$;

create or replace trigger hitl_notify_message
  after insert on realtime.messages
  for each row when (new.extension = 'broadcast')
  execute function realtime.hitl_notify_message();
