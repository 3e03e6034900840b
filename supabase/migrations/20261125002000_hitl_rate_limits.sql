-- Rate-limit counters shared by every relay replica (HITL_RATE_LIMIT_STORAGE=postgres), also
-- used as the Retell webhook's replay guard. One sliding-window counter per key and window
-- length: the weighted count is previous_window_hits * (1 - elapsed_fraction) + current_hits,
-- as in the `limits` library's sliding-window-counter strategy. Keys are made by the relay
-- (`<rule>:<sha256 of the identity>`), so no address or call id is stored in clear.
-- Only the service role (the relay) may touch any of it.

create table if not exists public.hil_rate_limits (
  key text not null,
  window_seconds integer not null,
  window_start timestamptz not null,
  hits integer not null default 0,
  primary key (key, window_seconds, window_start)
);
create index if not exists hil_rate_limits_window_idx on public.hil_rate_limits (window_start);

alter table public.hil_rate_limits enable row level security;
revoke all on public.hil_rate_limits from anon, authenticated;
grant all on public.hil_rate_limits to service_role;

-- Check (and with p_hit, count) one request against every limit in p_limits
-- (`[{"limit": n, "window_seconds": s}, ...]`). A refused request is not counted.
-- Returns {"allowed": bool, "retry_after": seconds until a request would be allowed}.
create or replace function public.hitl_rate_limit(p_key text, p_limits jsonb, p_hit boolean)
returns jsonb
language plpgsql volatile security invoker set search_path = public, pg_temp as $$
declare
  v_now timestamptz := clock_timestamp();
  v_item jsonb;
  v_limit bigint;
  v_window bigint;
  v_start timestamptz;
  v_elapsed double precision;
  v_cur bigint;
  v_prev bigint;
  v_wait double precision := 0;
  v_item_wait double precision;
begin
  if p_key is null or length(p_key) not between 1 and 200 then
    raise exception using errcode = 'P0001', message = 'invalid p_key: must be 1 to 200 characters',
      detail = 'p_key', hint = 'must be 1 to 200 characters';
  end if;
  if p_limits is null or jsonb_typeof(p_limits) <> 'array'
     or jsonb_array_length(p_limits) not between 1 and 10 then
    raise exception using errcode = 'P0001',
      message = 'invalid p_limits: must be an array of 1 to 10 {limit, window_seconds} objects',
      detail = 'p_limits', hint = 'must be an array of 1 to 10 {limit, window_seconds} objects';
  end if;
  for v_item in select value from jsonb_array_elements(p_limits) loop
    if jsonb_typeof(v_item) <> 'object'
       or jsonb_typeof(v_item -> 'limit') <> 'number'
       or jsonb_typeof(v_item -> 'window_seconds') <> 'number'
       or (v_item ->> 'limit')::numeric not between 1 and 1000000000
       or (v_item ->> 'window_seconds')::numeric not between 1 and 2678400 then
      raise exception using errcode = 'P0001',
        message = 'invalid p_limits: each limit must be 1 to 1e9 per 1 s to 31 days',
        detail = 'p_limits', hint = 'each limit must be 1 to 1e9 per 1 s to 31 days';
    end if;
  end loop;

  -- One key's hits are decided one at a time, on every replica.
  perform pg_advisory_xact_lock(hashtextextended('hitl_rate_limit:' || p_key, 0));

  for v_item in select value from jsonb_array_elements(p_limits) loop
    v_limit := floor((v_item ->> 'limit')::numeric);
    v_window := floor((v_item ->> 'window_seconds')::numeric);
    v_start := to_timestamp(floor(extract(epoch from v_now) / v_window) * v_window);
    v_elapsed := extract(epoch from v_now - v_start) / v_window;
    select coalesce(sum(hits) filter (where window_start = v_start), 0),
           coalesce(sum(hits) filter (where window_start = v_start - make_interval(secs => v_window)), 0)
      into v_cur, v_prev
      from public.hil_rate_limits
     where key = p_key and window_seconds = v_window
       and window_start >= v_start - make_interval(secs => v_window);
    if v_prev * (1 - v_elapsed) + v_cur + 1 > v_limit then
      if v_cur + 1 <= v_limit then
        -- the previous window's weight must fade enough, within the current window
        v_item_wait := v_window * ((1 - v_elapsed) - (v_limit - 1 - v_cur)::double precision / v_prev);
      else
        -- wait for the next window, then for this window's weight (as the previous) to fade
        v_item_wait := v_window * (1 - v_elapsed)
                       + v_window * greatest(0, 1 - (v_limit - 1)::double precision / greatest(v_cur, 1));
      end if;
      v_wait := greatest(v_wait, v_item_wait, 0.001);
    end if;
  end loop;

  if v_wait > 0 then
    return jsonb_build_object('allowed', false, 'retry_after', round(v_wait::numeric, 3));
  end if;
  if p_hit then
    for v_item in select value from jsonb_array_elements(p_limits) loop
      v_window := floor((v_item ->> 'window_seconds')::numeric);
      v_start := to_timestamp(floor(extract(epoch from v_now) / v_window) * v_window);
      insert into public.hil_rate_limits as r (key, window_seconds, window_start, hits)
      values (p_key, v_window, v_start, 1)
      on conflict (key, window_seconds, window_start) do update set hits = r.hits + 1;
      delete from public.hil_rate_limits
       where key = p_key and window_seconds = v_window
         and window_start < v_start - make_interval(secs => v_window);
    end loop;
    -- Now and then, forget the counters of keys that went quiet (no cron job needed).
    if random() < 0.01 then
      delete from public.hil_rate_limits
       where ctid in (select ctid from public.hil_rate_limits
                       where window_start + make_interval(secs => 2 * window_seconds) < v_now
                       limit 1000);
    end if;
  end if;
  return jsonb_build_object('allowed', true, 'retry_after', 0);
end
$$;

create or replace function public.hitl_rate_limit_hit(p_key text, p_limits jsonb) returns jsonb
language sql volatile security invoker set search_path = public, pg_temp as $$
  select public.hitl_rate_limit(p_key, p_limits, true)
$$;

create or replace function public.hitl_rate_limit_peek(p_key text, p_limits jsonb) returns jsonb
language sql volatile security invoker set search_path = public, pg_temp as $$
  select public.hitl_rate_limit(p_key, p_limits, false)
$$;

revoke all on function public.hitl_rate_limit(text, jsonb, boolean) from public, anon, authenticated;
revoke all on function public.hitl_rate_limit_hit(text, jsonb) from public, anon, authenticated;
revoke all on function public.hitl_rate_limit_peek(text, jsonb) from public, anon, authenticated;
grant execute on function public.hitl_rate_limit(text, jsonb, boolean) to service_role;
grant execute on function public.hitl_rate_limit_hit(text, jsonb) to service_role;
grant execute on function public.hitl_rate_limit_peek(text, jsonb) to service_role;
