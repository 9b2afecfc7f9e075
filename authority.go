package mulchat

import "context"

// NATSAccountLocker is implemented by the Queries of a store whose
// transactions can lock an account row. The authority locks the account before
// it rewrites the account JWT (a revocation), so two concurrent revocations on
// a database with read-committed transactions cannot each read the old JWT
// and overwrite the other's entry. A store without it serialises transactions
// some other way (SQLite takes its write lock at the start of InTx).
type NATSAccountLocker interface {
	// LockNATSAccount returns the account and locks its row until the end of
	// the transaction; ENOTFOUND when it does not exist.
	LockNATSAccount(ctx context.Context, id int64) (*NATSAccount, error)
}
