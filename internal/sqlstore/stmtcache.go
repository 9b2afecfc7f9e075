package sqlstore

import (
	"context"
	"database/sql"
	"sync"
)

// maxCachedStmts bounds the statement cache. Every query of this package is
// a constant string, so the bound is never reached today; it keeps a future
// query built from data from growing the cache without limit.
const maxCachedStmts = 256

// stmtCache keeps one prepared statement per query text, for SQLite.
//
// modernc.org/sqlite compiles the SQL text on every call of a plain
// ExecContext or QueryContext, and compiling took about a fifth of the CPU of
// a credential issuance. A *sql.Stmt is compiled once per connection and
// reused (database/sql prepares it lazily on each pool connection it runs on,
// and Tx.StmtContext reuses the connection's compiled statement). A statement
// compiled before a schema change is recompiled by SQLite itself.
//
// PostgreSQL does not use it: pgx already caches prepared statements per
// connection (QueryExecModeCacheStatement, its default), and a *sql.Stmt
// would only add a layer.
type stmtCache struct {
	db     *sql.DB
	mu     sync.RWMutex
	m      map[string]*sql.Stmt // a nil value: being prepared
	closed bool
	bg     sync.WaitGroup // background prepares; close waits for them
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, m: make(map[string]*sql.Stmt)}
}

// get returns the prepared statement for query, or nil when the caller
// should run the query unprepared this time: while it is being prepared, when
// it cannot be prepared (a table not created yet: the unprepared query then
// reports the same error it always did), or when the cache is full.
//
// Preparing on the pool needs a free connection. A caller inside a
// transaction already holds one, and if every connection were held by such
// callers, each waiting for another, none would ever come free; so inside a
// transaction the statement is prepared in the background and this call runs
// unprepared. No lock is held while preparing, for the same reason.
func (c *stmtCache) get(ctx context.Context, query string, inTx bool) *sql.Stmt {
	c.mu.RLock()
	st, known := c.m[query]
	c.mu.RUnlock()
	if known {
		return st
	}
	c.mu.Lock()
	if _, known := c.m[query]; known || c.closed || len(c.m) >= maxCachedStmts {
		st := c.m[query]
		c.mu.Unlock()
		return st
	}
	c.m[query] = nil
	if inTx {
		// Added under the lock, before close can set closed and wait.
		c.bg.Add(1)
	}
	c.mu.Unlock()
	if inTx {
		go func() {
			defer c.bg.Done()
			c.prepare(context.WithoutCancel(ctx), query)
		}()
		return nil
	}
	return c.prepare(ctx, query)
}

// prepare prepares query on the pool and caches it. On failure the query is
// forgotten, so that a later call tries again.
func (c *stmtCache) prepare(ctx context.Context, query string) *sql.Stmt {
	st, err := c.db.PrepareContext(ctx, query)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil || c.closed {
		delete(c.m, query)
		if st != nil {
			_ = st.Close() // the cache was closed meanwhile; nothing to report
		}
		return nil
	}
	c.m[query] = st
	return st
}

// close closes every cached statement; later calls of get return nil. It
// waits for background prepares first, so that none opens a connection (and
// the database's files) after the pool is closed.
func (c *stmtCache) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.bg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, st := range c.m {
		if st != nil {
			_ = st.Close() // the pool is closing; a statement's close error changes nothing
		}
		delete(c.m, q)
	}
}

// stmtExecer runs statements through the cache when there is one, and
// directly otherwise. Inside a transaction the cached statement is bound to
// the transaction's connection with Tx.StmtContext; database/sql closes that
// binding when the transaction ends.
type stmtExecer struct {
	cache *stmtCache
	db    *sql.DB
	tx    *sql.Tx // nil outside a transaction
}

func (e stmtExecer) stmt(ctx context.Context, query string) *sql.Stmt {
	st := e.cache.get(ctx, query, e.tx != nil)
	if st == nil || e.tx == nil {
		return st
	}
	return e.tx.StmtContext(ctx, st)
}

func (e stmtExecer) direct() execer {
	if e.tx != nil {
		return e.tx
	}
	return e.db
}

func (e stmtExecer) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := e.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return e.direct().ExecContext(ctx, query, args...)
}

func (e stmtExecer) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := e.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return e.direct().QueryContext(ctx, query, args...)
}

func (e stmtExecer) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := e.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return e.direct().QueryRowContext(ctx, query, args...)
}
