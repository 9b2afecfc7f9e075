package sqlstore

import (
	"context"

	"github.com/mulchat/mulchat"
)

var _ mulchat.NATSAccountLocker = (*queries)(nil)

// LockNATSAccount reads the account and, on PostgreSQL, locks its row until
// the transaction ends (SELECT … FOR UPDATE); a concurrent locker waits and
// then reads the committed JWT. On SQLite the transaction already holds the
// database write lock, so a plain read suffices. Outside a transaction it is
// a plain read.
func (q *queries) LockNATSAccount(ctx context.Context, id int64) (*mulchat.NATSAccount, error) {
	where := `id = $1`
	if q.dialect == DialectPostgres && q.tx != nil {
		where += ` FOR UPDATE`
	}
	return q.accountBy(ctx, where, id)
}
