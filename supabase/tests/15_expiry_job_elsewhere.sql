-- hitl_expiry_job() in a database without pg_cron's jobs: not scheduled, no run, no error.
begin;
select plan(1);

select is(public.hitl_expiry_job(), jsonb_build_object('scheduled', false, 'last_success', null),
  'no pg_cron job here: scheduled false');

select * from finish();
rollback;
