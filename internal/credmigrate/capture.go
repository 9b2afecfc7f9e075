package credmigrate

import (
	"context"
	"database/sql"
	"slices"
)

// Change capture: while the copy runs, a trigger on nats_user_credentials
// records the user id of every row the legacy app inserts, updates or
// deletes, so the catch-up redoes only the batches holding those users
// instead of a second pass over everything. The trigger and its table exist
// only during a run; a killed run leaves them, and the rerun (which then
// does the full final pass, see Run) removes them.
const (
	changedTable = "mulchat_credmigrate_changed"
	captureName  = "mulchat_credmigrate_capture"
)

// startCapture creates the capture table and trigger (idempotent).
func (m *Migrator) startCapture(ctx context.Context) error {
	err := m.inTx(ctx, true, func(tx *sql.Tx) error {
		stmts := []string{"CREATE TABLE IF NOT EXISTS " + changedTable + " (user_id BIGINT)"}
		if m.dialect == Postgres {
			// SECURITY DEFINER: the legacy application may write as a role
			// that cannot insert into the capture table (which the
			// migration's role owns); the function runs as its owner, with
			// the search_path of its creation, so its writes never fail.
			stmts = append(stmts, `CREATE OR REPLACE FUNCTION `+captureName+`() RETURNS trigger LANGUAGE plpgsql
	SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
	-- The migration's own writes (seed scrubs in its batches) are not changes to catch up.
	IF current_setting('`+selfSetting+`', true) = 'on' THEN RETURN NULL; END IF;
	IF TG_OP <> 'INSERT' THEN INSERT INTO `+changedTable+` (user_id) VALUES (OLD.user_id); END IF;
	IF TG_OP <> 'DELETE' THEN INSERT INTO `+changedTable+` (user_id) VALUES (NEW.user_id); END IF;
	RETURN NULL;
END $$`,
				"DROP TRIGGER IF EXISTS "+captureName+" ON "+LegacyTable,
				"CREATE TRIGGER "+captureName+" AFTER INSERT OR UPDATE OR DELETE ON "+LegacyTable+" FOR EACH ROW EXECUTE FUNCTION "+captureName+"()")
		} else {
			stmts = append(stmts,
				"CREATE TRIGGER IF NOT EXISTS "+captureName+"_ins AFTER INSERT ON "+LegacyTable+" BEGIN INSERT INTO "+changedTable+" (user_id) VALUES (NEW.user_id); END",
				"CREATE TRIGGER IF NOT EXISTS "+captureName+"_upd AFTER UPDATE ON "+LegacyTable+" BEGIN INSERT INTO "+changedTable+" (user_id) VALUES (OLD.user_id); INSERT INTO "+changedTable+" (user_id) VALUES (NEW.user_id); END",
				"CREATE TRIGGER IF NOT EXISTS "+captureName+"_del AFTER DELETE ON "+LegacyTable+" BEGIN INSERT INTO "+changedTable+" (user_id) VALUES (OLD.user_id); END")
		}
		for _, s := range stmts {
			if _, err := tx.ExecContext(ctx, s); err != nil {
				return err
			}
		}
		return nil
	})
	m.capturing = err == nil
	return internal(err, "installing change capture on "+LegacyTable)
}

// stopCapture removes the trigger and returns the user ids it recorded
// (sorted, distinct), dropping its table, in one transaction: a legacy write
// is either recorded and returned, or happens after the trigger is gone.
func (m *Migrator) stopCapture(ctx context.Context) ([]int64, error) {
	var ids []int64
	m.capturing = false
	err := m.inTx(ctx, true, func(tx *sql.Tx) error {
		ids = nil
		var stmts []string
		if m.dialect == Postgres {
			stmts = []string{"DROP TRIGGER IF EXISTS " + captureName + " ON " + LegacyTable, "DROP FUNCTION IF EXISTS " + captureName + "()"}
		} else {
			for _, s := range []string{"_ins", "_upd", "_del"} {
				stmts = append(stmts, "DROP TRIGGER IF EXISTS "+captureName+s)
			}
		}
		for _, s := range stmts {
			if _, err := tx.ExecContext(ctx, s); err != nil {
				return err
			}
		}
		ok, err := tableExists(ctx, tx, m.dialect, changedTable)
		if err != nil || !ok {
			return err
		}
		ids, err = queryIDs(ctx, tx, "SELECT DISTINCT user_id FROM "+changedTable+" WHERE user_id IS NOT NULL")
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "DROP TABLE "+changedTable)
		return err
	})
	slices.Sort(ids)
	return ids, internal(err, "removing change capture from "+LegacyTable)
}

// catchUp redoes (writing and verifying, one transaction each) every copy
// batch that holds a user whose legacy rows changed during the copy, then
// the user ids past the copy's last batch (rows of users new to the legacy
// table), and returns the verification of the whole run: the copy's batches
// with the redone ones replaced. Written and the seeds scrubbed count the
// catch-up's own only.
func (m *Migrator) catchUp(ctx context.Context, batches []batchResult, start int64, changed []int64) (*PassStats, error) {
	var written int64
	var seeds SeedScrub
	i := 0
	for k := range batches {
		b := &batches[k]
		for i < len(changed) && changed[i] <= b.lo {
			i++
		}
		if i == len(changed) || changed[i] > b.hi {
			continue
		}
		st, _, err := m.oneBatch(ctx, "catch-up", b.lo, b.hi, nil, nil, true, true, true, false)
		if err != nil {
			return nil, err
		}
		b.st = st
		written += st.Written
		seeds.merge(&st.seeds)
		if m.opts.Debug {
			m.log.Debug("credential migration: batch redone by the catch-up", "after_user_id", b.lo, "last_user_id", b.hi, "written", st.Written)
		}
	}
	last := start
	if len(batches) > 0 {
		last = batches[len(batches)-1].hi
	}
	tail, _, err := m.passBatches(ctx, "catch-up", last, nil, true, true, true, false, 0)
	if err != nil {
		return nil, err
	}
	v := newPassStats()
	for _, b := range batches {
		v.merge(b.st)
	}
	v.merge(tail)
	v.Batches += tail.Batches - 1
	v.Written = written + tail.Written
	seeds.merge(&tail.seeds)
	v.seeds = seeds
	v.finish()
	return v, nil
}
