package credmigrate

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// pipelineDepth is how many planned copy batches run at once on
// PostgreSQL. A batch's UPDATE keeps one backend busy, so a single stream of
// batches uses one core of the database server however many it has; with
// two in flight the next batch's statements run while the previous one
// writes and commits. Commits stay in user-id order (see flight), so the
// checkpoint keeps its meaning: every batch up to it committed, none after.
const pipelineDepth = 2

// errPredecessorFailed rolls back a batch whose predecessor did not commit:
// a batch commits only after every batch before it has.
var errPredecessorFailed = errors.New("credential migration: an earlier batch did not commit")

// flight is one planned batch of a pipelined copy. begun is closed once
// its transaction has begun (or failed to), done once it has ended; the
// result is valid after done.
type flight struct {
	after int64
	plan  []plannedUser
	seeds []seedRow
	begun chan struct{}
	done  chan struct{}

	st   *PassStats
	last int64
	err  error
}

// fly runs f in its own transaction: the batch's work first, then, once pred
// (the batch before it, nil for the first) has committed, the checkpoint
// and the commit. If pred failed, f rolls back and fails too; the driver
// redoes the failed batch alone (copyPipelined). f begins its transaction
// only after pred has begun its own, so pred never waits for a connection
// f holds while f waits for pred (a pool of any size is enough).
//
// The wait for pred is in Go, where PostgreSQL's deadlock detector does not
// see it. A cycle through it (pred waiting for a lock of a transaction that
// waits for one f holds: another claim to the same key written since the
// pre-check, or an application transaction locking users of both batches)
// ends when pred's statement reaches the lock timeout: pred fails, f rolls
// back, and the redo runs pred alone. So nobody waits longer than the lock
// timeout, as without the pipeline.
func (m *Migrator) fly(ctx context.Context, f, pred *flight, checkpoint bool) {
	defer close(f.done)
	if pred != nil {
		<-pred.begun
	}
	tx, err := m.beginTx(ctx, nil)
	close(f.begun)
	if err != nil {
		f.err = err
		return
	}
	f.err = endTx(tx, true, func(tx *sql.Tx) error {
		f.st = newPassStats()
		last, err := m.runPlannedBatch(ctx, tx, f.after, f.plan, f.seeds, f.st)
		if err != nil {
			return err
		}
		if pred != nil {
			<-pred.done
			if pred.err != nil {
				return errPredecessorFailed
			}
		}
		f.last = last
		if checkpoint {
			return m.setCheckpoint(ctx, tx, last)
		}
		return nil
	})
}

// copyPipelined is passBatches for the planned copy of a committing run on
// PostgreSQL: up to pipelineDepth batches at once, committed in order. A
// batch that fails (a lock or statement timeout, a stale plan) is redone
// alone by oneBatch, with its retries and its fallback to fresh reads, once
// the batches after it have rolled back; the pipeline then goes on.
func (m *Migrator) copyPipelined(ctx context.Context, name string, start int64, plan *copyPlan, checkpoint bool, total int64) (*PassStats, []batchResult, error) {
	l := m.startPass(name, total)
	defer l.prog.done()
	var queue []*flight // in flight, in user-id order
	next := start       // where the next batch to launch starts
	for {
		for len(queue) < pipelineDepth {
			planned, seeds := plan.next(next, m.opts.BatchSize)
			if planned == nil {
				break
			}
			f := &flight{after: next, plan: planned, seeds: seeds, begun: make(chan struct{}), done: make(chan struct{})}
			var pred *flight
			if len(queue) > 0 {
				pred = queue[len(queue)-1]
			}
			go m.fly(ctx, f, pred, checkpoint)
			queue = append(queue, f)
			next = planned[len(planned)-1].id
		}
		if len(queue) == 0 {
			break
		}
		f := queue[0]
		<-f.done
		if f.err == nil {
			queue = queue[1:]
			if err := m.record(ctx, l, f.after, f.last, f.st, true); err != nil {
				land(queue)
				return nil, nil, err
			}
			continue
		}
		// The batches after f roll back (they wait for f); redo f alone.
		land(queue[1:])
		queue = nil
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		m.log.Debug("credential migration: a pipelined batch failed; redoing it alone", "after_user_id", f.after, "err", f.err)
		st, last, err := m.oneBatch(ctx, name, f.after, 0, f.plan, f.seeds, true, true, true, checkpoint)
		if err != nil {
			return nil, nil, err
		}
		if err := m.record(ctx, l, f.after, last, st, true); err != nil {
			return nil, nil, err
		}
		next = last
	}
	l.all.finish()
	return l.all, l.batches, nil
}

// land waits for the batches still in flight to end (each commits or rolls
// back on its own).
func land(queue []*flight) {
	for _, f := range queue {
		<-f.done
	}
}

// setCheckpoint records, in a batch's transaction, that every user id up to
// last has been copied.
func (m *Migrator) setCheckpoint(ctx context.Context, tx *sql.Tx, last int64) error {
	_, err := tx.ExecContext(ctx, m.q("UPDATE "+checkpointTable+" SET last_user_id = ?, updated_at = ? WHERE name = ?"),
		last, m.opts.Now().UTC().Format(time.RFC3339Nano), checkpointName)
	return err
}
