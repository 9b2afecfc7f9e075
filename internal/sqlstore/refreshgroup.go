package sqlstore

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/mulchat/mulchat"
)

// refreshGroupMax bounds the refreshes one group write carries.
const refreshGroupMax = 64

// refreshGroupTimeout bounds a group's write, which runs on behalf of
// several requests and so not under any one request's context. Its
// statements never wait for a row lock (SKIP LOCKED), so only a database
// that stopped answering reaches it.
const refreshGroupTimeout = 10 * time.Second

// refreshGroup writes concurrent same-key JWT refreshes on PostgreSQL
// (RefreshUserNATSJWT outside a transaction) together, in one round trip
// and one transaction (refreshBatch): a group commit. A refresh that finds
// no write running runs at once, so a lone client waits for nothing;
// refreshes that arrive while one runs queue and are written together by
// the next write, led by the first of them. Each caller still returns only
// once its own row's outcome is known, with the same condition checked per
// row as the single statement checks; what is saved is a round trip and a
// commit per refresh, which cost more than the signature on PostgreSQL.
//
// One caller's row must never hold up another's: each row's statement skips
// the row if another transaction has locked it, and a refresh that was
// skipped, or whose write failed, reports false (nothing written), so its
// caller takes its durable path under its own context. A write made for a
// caller whose request has meanwhile ended still writes its row, which is
// harmless: the recorded expiry covers the JWT (mulchat.NATSJWTRefresher).
type refreshGroup struct {
	q *queries

	mu      sync.Mutex
	running bool
	queue   []*refreshCall

	// statements and refreshes count the group writes run and the
	// refreshes they carried, for RefreshGroupStats.
	statements, refreshes atomic.Int64
}

// RefreshGroupStats reports how many writes (a statement, or a pipeline of
// them in one transaction) PostgreSQL's grouped same-key refreshes have run
// and how many refreshes they carried (zero on SQLite): the benchmarks
// report the group size reached.
func (db *DB) RefreshGroupStats() (statements, refreshes int64) {
	if db.refresh == nil {
		return 0, 0
	}
	return db.refresh.statements.Load(), db.refresh.refreshes.Load()
}

type refreshCall struct {
	userID int64
	c      mulchat.NATSCredential
	args   []any // the one-row statement's, converted and checked once
	done   chan refreshResult
}

// refreshResult is a call's outcome, or, with lead set, the batch the call
// must now write itself (it was first in the queue when a statement ended).
type refreshResult struct {
	ok    bool
	lead  bool
	batch []*refreshCall
}

// do writes one refresh (c.ExpiresAt set) with whichever statement is next.
// Bad text is refused here, before the call can share a statement.
func (g *refreshGroup) do(ctx context.Context, userID int64, c mulchat.NATSCredential) (bool, error) {
	args, err := g.q.args(refreshOneArgs(userID, c))
	if err != nil {
		return false, err
	}
	call := &refreshCall{userID: userID, c: c, args: args}
	g.mu.Lock()
	if !g.running {
		g.running = true
		g.mu.Unlock()
		return g.lead(ctx, call, []*refreshCall{call}), nil
	}
	call.done = make(chan refreshResult, 1)
	g.queue = append(g.queue, call)
	g.mu.Unlock()
	// The wait is for at most the statement running now, which waits for
	// no lock; a caller does not leave early, as the next statement may
	// already hold its row.
	res := <-call.done
	if res.lead {
		return g.lead(ctx, call, res.batch), nil
	}
	return res.ok, nil
}

// lead writes batch (which holds self), hands the queue to its first call and
// returns whether self's row was written. The hand-off and the others'
// outcomes are deferred, so that even a panic in the statement leaves no
// caller waiting and the group running.
func (g *refreshGroup) lead(ctx context.Context, self *refreshCall, batch []*refreshCall) bool {
	var written map[int64]bool
	defer func() {
		g.mu.Lock()
		next := g.take()
		if len(next) == 0 {
			g.running = false
		}
		g.mu.Unlock()
		if len(next) > 0 {
			next[0].done <- refreshResult{lead: true, batch: next}
		}
		for _, call := range batch {
			if call != self {
				call.done <- refreshResult{ok: written[call.userID]}
			}
		}
	}()
	g.statements.Add(1)
	g.refreshes.Add(int64(len(batch)))
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshGroupTimeout)
	defer cancel()
	written, err := g.q.refreshBatch(wctx, batch)
	if err != nil {
		// Nobody's row was written: each caller takes its durable path,
		// which meets the same trouble, if it lasts, under its own
		// context and reports it as its own.
		written = nil
	}
	return written[self.userID]
}

// take removes the next batch from the queue: up to refreshGroupMax calls for
// distinct users (a second refresh of a user waits for the next statement, as
// one UPDATE cannot write a row twice). Callers hold g.mu.
func (g *refreshGroup) take() []*refreshCall {
	if len(g.queue) == 0 {
		return nil
	}
	batch := make([]*refreshCall, 0, min(len(g.queue), refreshGroupMax))
	seen := make(map[int64]bool, cap(batch))
	rest := g.queue[:0]
	for _, call := range g.queue {
		if len(batch) < refreshGroupMax && !seen[call.userID] {
			seen[call.userID] = true
			batch = append(batch, call)
			continue
		}
		rest = append(rest, call)
	}
	clear(g.queue[len(rest):])
	g.queue = rest
	return batch
}

// refreshBatch is RefreshUserNATSJWT's statement for several users at once
// (distinct ids, arguments converted and checked by do), on PostgreSQL: the
// one-row statement of each refresh, sent together in one pipeline (one
// round trip) ending in one Sync, so that PostgreSQL runs them as one implicit transaction with one
// commit, which, like the single statement's, does not wait for the WAL
// flush. Each statement leaves a row another transaction holds alone rather
// than waiting for it, so no row delays or deadlocks the others; each
// returns its own row's outcome. A statement that fails aborts the
// transaction, and nobody's row is written.
//
// One statement over arrays (UPDATE … FROM unnest(…)) did the same before;
// the pipeline costs the backend less for every group size measured (about
// 60-100 µs per row for 2 to 8 rows against 150-480 µs, at load 2-3 on
// this machine), as each of its statements is a primary key lookup while
// the planner joined the arrays to a scan of users.
func (q *queries) refreshBatch(ctx context.Context, batch []*refreshCall) (map[int64]bool, error) {
	n := len(batch)
	if n == 1 {
		// Alone, through the pool's usual path.
		call := batch[0]
		wrote, err := q.refreshOne(ctx, call.userID, call.c)
		return map[int64]bool{call.userID: wrote}, err
	}
	var b pgx.Batch
	for _, call := range batch {
		b.Queue(refreshOneRelaxedQuery, call.args...)
	}
	conn, err := q.db.sql.Conn(ctx)
	if err != nil {
		return nil, q.translate(ctx, err, errMsgs{})
	}
	defer conn.Close()
	written := make(map[int64]bool, n)
	err = conn.Raw(func(driverConn any) error {
		results := driverConn.(*stdlib.Conn).Conn().SendBatch(ctx, &b)
		for _, call := range batch {
			tag, err := results.Exec()
			if err != nil {
				results.Close()
				return err
			}
			written[call.userID] = tag.RowsAffected() > 0
		}
		return results.Close()
	})
	if err != nil {
		return nil, q.translate(ctx, err, errMsgs{})
	}
	return written, nil
}
