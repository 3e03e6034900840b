"""The Realtime subset: Supabase Realtime's Phoenix protocol over Starlette websockets.

What the unmodified clients speak (`/work/shared/notes/supabase-protocol.md` §1-§7), following
the supabase/realtime server sources module by module:

- `serializer`: Phoenix V1 JSON (realtime-py) and Realtime's V2 (supabase-js: arrays plus
  binary user broadcasts, kind 3 in and kind 4 out), chosen per socket from `vsn`;
- `authorization`: private channels through the `realtime.messages` RLS policies under the
  token's role with `realtime.topic()` set, in a transaction that always rolls back;
- `presence`: Phoenix.Presence state and diffs;
- `limits`: Supabase's limits (profiles `free`, `pro`, `local`) and its per-project rate counter;
- `changes`: postgres_changes, through Realtime's own SQL (`realtime.subscription`,
  `realtime.apply_rls` over a temporary wal2json slot, `realtime.list_changes`);
- `service`: the websocket endpoint (heartbeat, join/leave routing, duplicate joins, unmatched
  topics) and the REST broadcast routes, over the handlers below;
- `join_handler`: a join's checks with Supabase's replies (limits, token, RLS), replay, presence
  state;
- `broadcast_handler`: a client's broadcast (write check, ack/self, size) and the fan-out;
- `presence_handler`: track and untrack, their write check and rate limits;
- `registry`: the sockets and topics, and a channel's lifecycle (system messages, shutdown,
  leave, token expiry, access_token);
- `joins`: a join's parameters, its token replies and its replay of stored broadcasts;
- `database`: database broadcasts: rows `realtime.send` writes arrive by NOTIFY `hitl_realtime`
  after commit, in commit order, and go to every subscriber of the topic allowed to read them;
- `outgoing`: one broadcast, encoded at most once per serializer;
- `api`: the REST broadcast endpoints.

Not supported (see the devstack README): binary kinds other than 3 from clients.
"""

from hitl_devstack.realtime.database import NOTIFY_CHANNEL
from hitl_devstack.realtime.limits import RealtimeLimits
from hitl_devstack.realtime.service import RealtimeService

__all__ = ["NOTIFY_CHANNEL", "RealtimeLimits", "RealtimeService"]
