-- hitl_expiry_job() where the expiry job is not scheduled: a database without pg_cron (how
-- scripts/pgtap first runs this file) or, as `supabase test db` runs every file in the one
-- database pg_cron serves, with the job unscheduled inside this rolled-back transaction.
begin;
select plan(1);

do $$
begin
  if to_regclass('cron.job') is not null then
    perform cron.unschedule(jobid) from cron.job where jobname = 'hitl-expire-sessions';
  end if;
end
$$;

select is(public.hitl_expiry_job(), jsonb_build_object('scheduled', false, 'last_success', null),
  'no pg_cron job here: scheduled false');

select * from finish();
rollback;
