package authority

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// IssuedCredential is a freshly signed user credential. Seed and Creds are
// set only when the server generated the key pair; they are handed to the
// user once and never stored.
type IssuedCredential struct {
	JWT       string
	PublicKey string
	ExpiresAt time.Time
	Seed      []byte
	Creds     []byte
}

// IssueUserCredential signs a new credential for the user. With publicKey ""
// the key pair is generated here and its seed returned once (the database keeps
// only its SHA-256); otherwise publicKey must be a user public nkey whose seed
// stays with the client. ttl 0 means the default lifetime.
//
// A user holds one credential: when the previous one is still active and has
// another key, that key is revoked in the same transaction. A key that was
// revoked before is refused, so a stolen key cannot be brought back.
//
// Issuing again for the current key (a refresh) never shortens its expiry.
// A refresh whose JWT the recorded expiry covers is written in one statement
// that may skip the wait for durability (refreshExpiry), and within
// recentTTL of this instance's last read of the user it is signed from that
// read (recentIssues); every other write is durable.
func (a *Authority) IssueUserCredential(ctx context.Context, userID int64, publicKey string, ttl time.Duration) (*IssuedCredential, error) {
	ttl, err := a.checkTTL(ttl)
	if err != nil {
		return nil, err
	}
	var seed []byte
	if publicKey == "" {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot generate a user key")
		}
		publicKey, _ = kp.PublicKey()
		if seed, err = kp.Seed(); err != nil {
			return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot read the generated seed")
		}
	} else if !nkeys.IsValidPublicUserKey(publicKey) {
		return nil, mulchat.Errorf(mulchat.EINVALID, "public_key must be a NATS user public key (56 characters starting with U)")
	}

	// A client refreshing the JWT of the key it was just issued: signed from
	// what that issuance read, written in one conditional statement.
	if seed == nil {
		if u, grants, ok := a.recent.get(userID, publicKey); ok {
			out, ok, err := a.refreshRecent(ctx, u, grants, ttl)
			if err != nil || ok {
				return out, err
			}
		}
	}

	// Read and sign outside the transaction: signing is the expensive part,
	// and holding the store's write lock while signing would serialise every
	// issuance. The transaction re-reads the row before writing.
	read := time.Now()
	u, grants, err := a.userAndGrants(ctx, userID)
	if err != nil {
		return nil, err
	}
	if !u.IsActive {
		return nil, errUserDisabled()
	}
	// A client key must not be one revoked before. Re-issuing the user's
	// current, unrevoked key (a client refreshing its JWT) needs no lookup.
	if seed == nil && (u.NATS.PublicKey != publicKey || u.NATS.ExpiredAt != nil) {
		revoked, err := a.keyRevoked(ctx, a.chat.id, publicKey)
		if err != nil {
			return nil, err
		}
		if revoked {
			return nil, errKeyRevoked()
		}
	}
	now := a.now()
	exp := expiry(now, ttl)
	// covered: a client refreshing the JWT of its current key, whose recorded
	// expiry already covers the new JWT; the store may then write it without
	// waiting for durability (see refreshExpiry).
	covered := false
	if u.NATS.PublicKey == publicKey {
		exp = notShorter(exp, u.NATS)
		if seed == nil && u.NATS.ExpiredAt == nil && u.NATS.ExpiresAt != nil && u.NATS.AccountID == a.chat.id {
			exp, covered = a.refreshExpiry(now, ttl, exp, *u.NATS.ExpiresAt)
		}
	}
	token, err := a.signUser(u, publicKey, grants, exp)
	if err != nil {
		return nil, err
	}
	cred := mulchat.NATSCredential{
		JWT:              token,
		PublicKey:        publicKey,
		AccountID:        a.chat.id,
		AccountPublicKey: a.chat.pub,
		ExpiresAt:        &exp,
	}
	out := &IssuedCredential{JWT: token, PublicKey: publicKey, ExpiresAt: exp}
	if seed != nil {
		sum := sha256.Sum256(seed)
		cred.SeedHash = hex.EncodeToString(sum[:])
		// Formatted before the commit: a credential whose seed could not be
		// handed out must not be stored.
		out.Seed = seed
		if out.Creds, err = formatFreshCreds(token, seed); err != nil {
			return nil, err
		}
	}

	if covered {
		if r, ok := a.store.(mulchat.NATSJWTRefresher); ok {
			wrote, err := r.RefreshUserNATSJWT(ctx, userID, cred)
			if err != nil {
				return nil, err
			}
			if wrote {
				a.issuedIssue.Inc()
				a.log.Info("issued nats credential", "user_id", userID, "public_key", publicKey,
					"generated", false, "expires_at", exp, "refresh", true)
				a.recent.put(u, grants, cred, read)
				return out, nil
			}
		}
	}

	// The common case revokes nothing: a first credential, or a client
	// refreshing the JWT of its current key. The store then writes it in one
	// conditional statement, without a transaction; if the row changed since
	// it was read so that a key would have to be revoked, nothing is written
	// and the general path below decides.
	if !replaces(u.NATS, publicKey, now) {
		if s, ok := a.store.(mulchat.NATSCredentialSetter); ok {
			wrote, err := s.SetUserNATSCredentialIfNothingToRevoke(ctx, userID, cred)
			if err != nil {
				return nil, err
			}
			if wrote {
				a.issuedIssue.Inc()
				a.log.Info("issued nats credential", "user_id", userID, "public_key", publicKey,
					"generated", seed != nil, "expires_at", exp)
				a.recent.put(u, grants, cred, read)
				return out, nil
			}
		}
	}

	var old revocation
	var oldAccount int64
	err = a.store.InTx(ctx, func(q mulchat.Queries) error {
		old, oldAccount = revocation{}, 0
		cur, err := q.UserByID(ctx, userID)
		if err != nil {
			return err
		}
		if replaces(cur.NATS, publicKey, now) {
			// Lock the account before anything else and read the user again
			// under the lock: the same order as RevokeUserCredential, so the
			// two cannot deadlock, and a concurrent change is seen.
			if _, err := a.lockAccount(ctx, q, a.accountOf(cur.NATS)); err != nil {
				return err
			}
			if cur, err = q.UserByID(ctx, userID); err != nil {
				return err
			}
		}
		if !cur.IsActive {
			return errUserDisabled()
		}
		prev := cur.NATS
		if prev.PublicKey == publicKey && prev.ExpiredAt != nil {
			return errKeyRevoked()
		}
		if replaces(prev, publicKey, now) {
			old, oldAccount = a.revocationOf(prev, now), a.accountOf(prev)
			if _, err := a.revokeKeysTx(ctx, q, oldAccount, now, old); err != nil {
				return err
			}
		}
		// The store keeps a later recorded expiry of the same key,
		// unrevoked (a racing refresh with a longer TTL), on the row as
		// it is when written.
		return q.UpdateUserNATSCredential(ctx, userID, cred)
	})
	if err != nil {
		return nil, err
	}
	a.issuedIssue.Inc()
	a.log.Info("issued nats credential", "user_id", userID, "public_key", publicKey,
		"generated", seed != nil, "expires_at", exp)
	a.recent.put(u, grants, cred, read)
	if old.key != "" {
		// The new credential is committed; failing to propagate the old
		// key's revocation now must not fail the issue. It is logged, and
		// PushAccounts at the next start (or the next revocation) carries it.
		if err := a.propagateRevocation(ctx, userID, oldAccount, now, old); err != nil {
			a.log.Warn("replaced credential revoked in the store but not propagated to NATS",
				"user_id", userID, "public_key", old.key, "err", err)
		}
	}
	return out, nil
}

// RenewUserCredential signs a new JWT for the user's current key. A revoked
// credential cannot be renewed (EFORBIDDEN); an expired one can, because the
// caller has authenticated as the user and the key was never revoked — a
// client that was offline past its expiry keeps its key. The user's current
// permission grants are written into the new JWT.
//
// The new JWT never expires before the one it renews: a shorter one would
// leave the older, longer JWT of the same key valid past the expiry the store
// records, and the revocation entry of the key lives only until that expiry.
func (a *Authority) RenewUserCredential(ctx context.Context, userID int64, ttl time.Duration) (*IssuedCredential, error) {
	ttl, err := a.checkTTL(ttl)
	if err != nil {
		return nil, err
	}
	a.recent.forget(userID)
	u, grants, err := a.userAndGrants(ctx, userID)
	if err != nil {
		return nil, err
	}
	if err := renewable(u); err != nil {
		return nil, err
	}
	publicKey := u.NATS.PublicKey
	now := a.now()
	exp := notShorter(expiry(now, ttl), u.NATS)
	token, err := a.signUser(u, publicKey, grants, exp)
	if err != nil {
		return nil, err
	}
	err = a.store.InTx(ctx, func(q mulchat.Queries) error {
		cur, err := q.UserByID(ctx, userID)
		if err != nil {
			return err
		}
		if err := renewable(cur); err != nil {
			return err
		}
		if cur.NATS.PublicKey != publicKey {
			return mulchat.Errorf(mulchat.ECONFLICT, "the credential was replaced while renewing; renew again")
		}
		cred := cur.NATS
		cred.JWT = token
		cred.AccountID = a.chat.id
		cred.AccountPublicKey = a.chat.pub
		cred.ExpiresAt = &exp // the store keeps a later one of this key
		return q.UpdateUserNATSCredential(ctx, userID, cred)
	})
	if err != nil {
		return nil, err
	}
	a.issuedRenew.Inc()
	a.log.Info("renewed nats credential", "user_id", userID, "public_key", publicKey, "expires_at", exp)
	return &IssuedCredential{JWT: token, PublicKey: publicKey, ExpiresAt: exp}, nil
}

// refreshRecent signs a refresh of u's current key from the user and grants
// an issuance read less than recentTTL ago (recentIssues), and writes it if
// the recorded expiry covers it, in the one conditional statement of
// mulchat.NATSJWTRefresher. ok false (nothing written) sends the caller to
// its general path, which reads the row again.
func (a *Authority) refreshRecent(ctx context.Context, u *mulchat.User, grants []*mulchat.Permission, ttl time.Duration) (*IssuedCredential, bool, error) {
	r, ok := a.store.(mulchat.NATSJWTRefresher)
	if !ok || u.NATS.AccountID != a.chat.id {
		return nil, false, nil
	}
	now := a.now()
	exp, covered := a.refreshExpiry(now, ttl, notShorter(expiry(now, ttl), u.NATS), *u.NATS.ExpiresAt)
	if !covered {
		return nil, false, nil
	}
	token, err := a.signUser(u, u.NATS.PublicKey, grants, exp)
	if err != nil {
		return nil, false, err
	}
	cred := mulchat.NATSCredential{JWT: token, PublicKey: u.NATS.PublicKey, AccountID: a.chat.id,
		AccountPublicKey: a.chat.pub, ExpiresAt: &exp}
	wrote, err := r.RefreshUserNATSJWT(ctx, u.ID, cred)
	if err != nil || !wrote {
		return nil, false, err
	}
	a.issuedIssue.Inc()
	a.log.Info("issued nats credential", "user_id", u.ID, "public_key", u.NATS.PublicKey,
		"generated", false, "expires_at", exp, "refresh", true)
	return &IssuedCredential{JWT: token, PublicKey: u.NATS.PublicKey, ExpiresAt: exp}, true, nil
}

// refreshSlack is how much longer than asked the JWT of a same-key refresh
// that extends the key's recorded expiry lives: 1/16 of its TTL (90 min for
// 24 h).
func refreshSlack(ttl time.Duration) time.Duration { return ttl / 16 }

// refreshExpiry decides the expiry of a JWT refreshing the current,
// unrevoked key whose recorded expiry is recorded, and whether that recorded
// expiry covers it.
//
// A refresh whose JWT expires no later than the recorded expiry may be
// written without waiting for durability (mulchat.NATSJWTRefresher): should
// the write be lost in a database crash, the key's revocation entry, which
// lives until the recorded expiry, still outlives the lost JWT, so pruning
// can never bring it back. A refresh that must extend the recorded expiry is
// written durably, and extends it by refreshSlack beyond what was asked
// (never past MaxTTL from now), so that the refreshes of the next
// refreshSlack — page reloads, restarts, several devices — are covered. The
// cost is a JWT (and a revocation entry) living up to 1/16 of its TTL longer.
func (a *Authority) refreshExpiry(now time.Time, ttl time.Duration, exp, recorded time.Time) (time.Time, bool) {
	if !exp.After(recorded) {
		return exp, true
	}
	exp = exp.Add(refreshSlack(ttl)).Truncate(time.Second)
	if limit := expiry(now, a.maxTTL); exp.After(limit) {
		exp = limit
	}
	return exp, false
}

// replaces reports whether storing a credential for publicKey replaces prev
// while prev is still active, so that prev's key must be revoked.
func replaces(prev mulchat.NATSCredential, publicKey string, now time.Time) bool {
	return prev.PublicKey != "" && prev.PublicKey != publicKey && prev.Status(now) == mulchat.CredentialActive
}

// userAndGrants reads the user and the user's permission grants, in one
// statement where the store can (mulchat.UserGrantsReader).
func (a *Authority) userAndGrants(ctx context.Context, userID int64) (*mulchat.User, []*mulchat.Permission, error) {
	if r, ok := a.store.(mulchat.UserGrantsReader); ok {
		return r.UserWithPermissions(ctx, userID)
	}
	u, err := a.store.UserByID(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	grants, err := a.store.ListUserPermissions(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	return u, grants, nil
}

func renewable(u *mulchat.User) error {
	if !u.IsActive {
		return errUserDisabled()
	}
	if u.NATS.PublicKey == "" {
		return mulchat.Errorf(mulchat.ENOTFOUND, "the user has no NATS credential to renew")
	}
	if u.NATS.ExpiredAt != nil {
		return mulchat.Errorf(mulchat.EFORBIDDEN, "the NATS credential was revoked; issue a new one with a new key")
	}
	return nil
}

// RevokeUserCredential revokes the user's current credential: it sets
// nats_expired_at and adds the key to its account's revocation list (pruned of
// entries whose JWTs have all expired) in one transaction, then pushes the account JWT
// to the servers, which close the key's connections, and calls the Kicker.
//
// It is idempotent: revoking a credential that is already revoked changes
// nothing in the store but pushes and kicks again, so a retry after a failed
// push completes the job. A user without a credential is ENOTFOUND. When the
// push or kick fails after the commit, the error is EUNAVAILABLE: the
// revocation is stored and a retry (or PushAccounts at the next start)
// propagates it.
func (a *Authority) RevokeUserCredential(ctx context.Context, userID int64) error {
	a.recent.forget(userID)
	now := a.now()
	var rev revocation
	var account int64
	var newly bool
	err := a.store.InTx(ctx, func(q mulchat.Queries) error {
		newly = false
		u, err := q.UserByID(ctx, userID)
		if err != nil {
			return err
		}
		if u.NATS.PublicKey == "" {
			return mulchat.Errorf(mulchat.ENOTFOUND, "the user has no NATS credential")
		}
		// Account row first, then the user row (as in Issue); the user is
		// read again under the account lock so the key revoked is the one
		// the row holds when the transaction commits.
		if _, err := a.lockAccount(ctx, q, a.accountOf(u.NATS)); err != nil {
			return err
		}
		if u, err = q.UserByID(ctx, userID); err != nil {
			return err
		}
		if u.NATS.PublicKey == "" {
			return mulchat.Errorf(mulchat.ENOTFOUND, "the user has no NATS credential")
		}
		rev, account = a.revocationOf(u.NATS, now), a.accountOf(u.NATS)
		if _, err := a.revokeKeysTx(ctx, q, account, now, rev); err != nil {
			return err
		}
		if u.NATS.ExpiredAt == nil {
			newly = true
			if err := q.ExpireUserNATSCredential(ctx, userID, now.UTC()); err != nil {
				return err
			}
			// A same-key refresh outside this transaction (PostgreSQL) may
			// have recorded a later expiry after the read above. The
			// UPDATE just made holds the row now, so a read sees any such
			// write, and a later one finds the key revoked and writes
			// nothing. The entry must outlive every JWT of the key.
			after, err := q.UserByID(ctx, userID)
			if err != nil {
				return err
			}
			if later := a.revocationOf(after.NATS, now); after.NATS.PublicKey == rev.key && later.until.After(rev.until) {
				rev = later
				_, err = a.revokeKeysTx(ctx, q, account, now, rev)
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if newly {
		a.revoked.Inc()
	}
	a.log.Info("revoked nats credential", "user_id", userID, "public_key", rev.key, "already_revoked", !newly)
	return a.propagateRevocation(ctx, userID, account, now, rev)
}

// accountOf returns the account a credential belongs to; a credential
// without one (legacy rows) is taken to be in the chat account.
func (a *Authority) accountOf(c mulchat.NATSCredential) int64 {
	if c.AccountID != 0 {
		return c.AccountID
	}
	return a.chat.id
}

// revocationTime is the timestamp written for a revocation. The jwt library
// stamps iat from the wall clock, so the revocation must not be earlier than
// the wall clock either, whatever Config.Now says.
func (a *Authority) revocationTime(now time.Time) time.Time {
	if wall := time.Now(); wall.After(now) {
		return wall
	}
	return now
}

// revokeKeysTx adds revocations to the account's revocation list, prunes
// entries whose JWTs have all expired and stores the re-signed account JWT,
// inside q's transaction. It returns the new account JWT.
func (a *Authority) revokeKeysTx(ctx context.Context, q mulchat.Queries, accountID int64, now time.Time, revs ...revocation) (string, error) {
	acct, err := a.lockAccount(ctx, q, accountID)
	if err != nil {
		return "", err
	}
	claims, err := jwt.DecodeAccountClaims(acct.JWT)
	if err != nil {
		return "", mulchat.WrapError(mulchat.EINTERNAL, err, "the stored JWT of account "+acct.Name+" is not valid")
	}
	a.upgradeRevocations(claims)
	at := a.revocationTime(now)
	for _, r := range revs {
		claims.RevokeAt(r.key, r.stamp(at))
	}
	pruneRevocations(claims, now)
	token, err := claims.Encode(a.operatorKP)
	if err != nil {
		return "", mulchat.WrapError(mulchat.EINTERNAL, err, "cannot sign the account JWT of "+acct.Name)
	}
	if err := q.UpdateNATSAccountJWT(ctx, accountID, token); err != nil {
		return "", err
	}
	// Encode left claims equal to what token holds. Caching them spares
	// propagateRevocation (and the next keyRevoked) decoding and verifying
	// the JWT just signed, which costs more than signing it once the
	// revocation list is long. claims is not touched after this. Should the
	// transaction roll back, no stored JWT equals token, so the entry is
	// never used.
	a.claims.put(token, claims)
	return token, nil
}

// lockAccount reads the account row, locking it for the rest of q's
// transaction where the store supports it (mulchat.NATSAccountLocker).
func (a *Authority) lockAccount(ctx context.Context, q mulchat.Queries, id int64) (*mulchat.NATSAccount, error) {
	if l, ok := q.(mulchat.NATSAccountLocker); ok {
		return l.LockNATSAccount(ctx, id)
	}
	return q.NATSAccountByID(ctx, id)
}

// pruneRevocations drops the entries whose timestamp has passed: the
// timestamp of an entry written here is the latest expiry of any JWT signed
// for its key (see revocation), so once it is past there is nothing left for
// the entry to refuse. The account JWT then holds only the revoked keys that
// still have a valid JWT, a number bounded by the sessions replaced or
// revoked within one credential lifetime, not within MaxTTL.
func pruneRevocations(claims *jwt.AccountClaims, now time.Time) int {
	cutoff := now.Unix()
	n := 0
	for k, ts := range claims.Revocations {
		if k != jwt.All && ts < cutoff {
			delete(claims.Revocations, k)
			n++
		}
	}
	return n
}

// propagateRevocation makes sure the stored account JWT carries the
// revocation, then pushes it and kicks the key's sessions.
//
// Account rewrites lock the account row (NATSAccountLocker), so a concurrent
// rewrite cannot drop this key; the check after the commit is the safety net
// for a store without row locks, and costs one cached read.
func (a *Authority) propagateRevocation(ctx context.Context, userID, accountID int64, now time.Time, rev revocation) error {
	key := rev.key
	var token string
	for attempt := 0; ; attempt++ {
		acct, err := a.store.NATSAccountByID(ctx, accountID)
		if err != nil {
			return err
		}
		claims, err := a.claims.decode(acct.JWT)
		if err != nil {
			return mulchat.WrapError(mulchat.EINTERNAL, err, "the stored JWT of account "+acct.Name+" is not valid")
		}
		if _, ok := claims.Revocations[key]; ok {
			token = acct.JWT
			break
		}
		if attempt == 5 {
			return mulchat.Errorf(mulchat.EINTERNAL, "the revocation of %s keeps being overwritten by concurrent account updates", key)
		}
		err = a.store.InTx(ctx, func(q mulchat.Queries) error {
			_, err := a.revokeKeysTx(ctx, q, accountID, now, rev)
			return err
		})
		if err != nil {
			return err
		}
	}
	if a.pusher != nil {
		if err := a.pusher(ctx, token); err != nil {
			return mulchat.WrapError(mulchat.EUNAVAILABLE, err,
				"the credential is revoked in the database, but the NATS servers could not be updated; retry the revocation")
		}
	}
	if a.kicker != nil {
		if err := a.kicker(ctx, userID, key); err != nil {
			return mulchat.WrapError(mulchat.EUNAVAILABLE, err,
				"the credential is revoked, but its live sessions could not be kicked; retry the revocation")
		}
	}
	return nil
}

// keyRevoked reports whether the account's revocation list names key with an
// entry that is still in force. An entry whose time has passed (left until the
// next rewrite prunes it) no longer counts: every JWT it covers has expired,
// and a JWT signed now is not covered by it.
func (a *Authority) keyRevoked(ctx context.Context, accountID int64, key string) (bool, error) {
	acct, err := a.store.NATSAccountByID(ctx, accountID)
	if err != nil {
		return false, err
	}
	claims, err := a.claims.decode(acct.JWT)
	if err != nil {
		return false, mulchat.WrapError(mulchat.EINTERNAL, err, "the stored JWT of account "+acct.Name+" is not valid")
	}
	ts, ok := claims.Revocations[key]
	if !ok {
		return false, nil
	}
	if !claims.Tags.Contains(revocationsTag) {
		ts += int64(a.maxTTL / time.Second)
	}
	// The earlier of the two clocks: a JWT signed now carries the wall
	// clock's iat, and must not fall under the entry.
	earliest := a.now()
	if wall := time.Now(); wall.Before(earliest) {
		earliest = wall
	}
	return ts >= earliest.Unix(), nil
}

// revocationsTag marks an account JWT whose revocation timestamps are the
// "until" of revocation below. Entries of a JWT without it were written by an
// older mulchat as the revocation time, and may cover JWTs valid for up to
// MaxTTL after it.
const revocationsTag = "mulchat-revocations:until-expiry"

// revocation is a key to revoke and the latest expiry of any JWT signed for
// it (the users.nats_expires_at of the credential, which renewals never
// shorten).
type revocation struct {
	key   string
	until time.Time
}

// revocationOf is the revocation of credential c, revoked now. A credential
// without a recorded expiry (not one mulchat signed) is given MaxTTL.
func (a *Authority) revocationOf(c mulchat.NATSCredential, now time.Time) revocation {
	r := revocation{key: c.PublicKey, until: now.Add(a.maxTTL)}
	if c.ExpiresAt != nil {
		r.until = *c.ExpiresAt
	}
	return r
}

// stamp is the timestamp written in the account JWT for r, revoked at at.
// NATS refuses a user JWT whose iat is not after the entry's timestamp, so a
// timestamp at the key's last expiry refuses every JWT signed for the key up
// to the revocation, as the revocation time would, and records when the entry
// can go (pruneRevocations). It also refuses JWTs of that key signed after the
// revocation, until then; mulchat signs none (keyRevoked).
func (r revocation) stamp(at time.Time) time.Time {
	if r.until.After(at) {
		return r.until
	}
	return at
}

// upgradeRevocations converts the entries of an account JWT written by an
// older mulchat, whose timestamp was the revocation time, to the "until"
// form: revocation time plus MaxTTL, the latest a JWT it covers can expire.
// The entries then refuse exactly the JWTs they did, and are pruned when the
// old rule would have pruned them.
func (a *Authority) upgradeRevocations(claims *jwt.AccountClaims) {
	if claims.Tags.Contains(revocationsTag) {
		return
	}
	for k, ts := range claims.Revocations {
		if k != jwt.All {
			claims.Revocations[k] = ts + int64(a.maxTTL/time.Second)
		}
	}
	claims.Tags.Add(revocationsTag)
}

// notShorter returns exp, or the expiry of the current credential c if that
// is later and c is not revoked: a JWT of c's key never expires before one
// already signed for it, so users.nats_expires_at stays the latest expiry of
// the key's JWTs.
func notShorter(exp time.Time, c mulchat.NATSCredential) time.Time {
	if c.ExpiredAt == nil && c.ExpiresAt != nil && c.ExpiresAt.After(exp) {
		return c.ExpiresAt.UTC()
	}
	return exp
}

func errUserDisabled() error {
	return mulchat.Errorf(mulchat.EFORBIDDEN, "the user is disabled")
}

func errKeyRevoked() error {
	return mulchat.Errorf(mulchat.EFORBIDDEN, "this public key was revoked; generate a new key pair")
}

func (a *Authority) checkTTL(ttl time.Duration) (time.Duration, error) {
	if ttl == 0 {
		return a.defaultTTL, nil
	}
	if ttl < MinTTL || ttl > a.maxTTL {
		return 0, mulchat.Errorf(mulchat.EINVALID, "ttl must be between %s and %s", MinTTL, a.maxTTL)
	}
	return ttl, nil
}

// expiry is now+ttl in UTC, truncated to the second the JWT can express.
func expiry(now time.Time, ttl time.Duration) time.Time {
	return now.Add(ttl).Truncate(time.Second).UTC()
}

// signUser builds and signs a user JWT with the constant permission set of
// DESIGN.md plus the user's explicit grants.
func (a *Authority) signUser(u *mulchat.User, publicKey string, grants []*mulchat.Permission, exp time.Time) (string, error) {
	uid := strconv.FormatInt(u.ID, 10)
	uc := jwt.NewUserClaims(publicKey)
	uc.Name = u.Username
	uc.IssuerAccount = a.chat.pub
	uc.Expires = exp.Unix()
	uc.Pub.Allow.Add("chat.send.*."+uid, "chat.api."+uid+".>")
	uc.Sub.Allow.Add("chat.user."+uid+".>", mulchat.UserInboxPrefix(u.ID)+".>")
	for _, g := range grants {
		if !validSubject(g.Subject) {
			// A malformed grant row must not lock its user out of chat; it
			// is left out and reported to the operator.
			a.log.Warn("skipping an invalid nats permission grant", "user_id", u.ID, "permission_id", g.ID)
			continue
		}
		switch g.Type {
		case mulchat.PermPub:
			uc.Pub.Allow.Add(g.Subject)
		case mulchat.PermSub:
			uc.Sub.Allow.Add(g.Subject)
		case mulchat.PermBoth:
			uc.Pub.Allow.Add(g.Subject)
			uc.Sub.Allow.Add(g.Subject)
		default:
			a.log.Warn("skipping a nats permission grant of unknown type", "user_id", u.ID, "permission_id", g.ID)
		}
	}
	uc.Limits.Payload = UserMaxPayload
	uc.Limits.Subs = UserMaxSubs
	uc.Limits.Data = jwt.NoLimit
	token, err := uc.Encode(a.chat.signer)
	if err != nil {
		return "", mulchat.WrapError(mulchat.EINTERNAL, err, "cannot sign the user JWT")
	}
	return token, nil
}

// validSubject accepts a NATS subject usable in a permission: non-empty
// tokens of printable characters without spaces, '>' only as the last token.
func validSubject(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	tokens := strings.Split(s, ".")
	for i, t := range tokens {
		if t == "" {
			return false
		}
		if strings.Contains(t, ">") && (t != ">" || i != len(tokens)-1) {
			return false
		}
		if strings.Contains(t, "*") && t != "*" {
			return false
		}
		for _, r := range t {
			if r <= ' ' || r == 0x7f {
				return false
			}
		}
	}
	return true
}

// claimsCache keeps the last decoded account JWT: decoding verifies an
// ed25519 signature, and the account JWT changes only on revocations.
type claimsCache struct {
	mu     sync.Mutex
	token  string
	claims *jwt.AccountClaims
}

// decode returns the decoded claims of token. The result is shared: callers
// must not modify it.
func (c *claimsCache) decode(token string) (*jwt.AccountClaims, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.claims != nil && c.token == token {
		return c.claims, nil
	}
	claims, err := jwt.DecodeAccountClaims(token)
	if err != nil {
		return nil, err
	}
	c.token, c.claims = token, claims
	return claims, nil
}

// put caches claims as the decoded form of token, a JWT signed here from
// claims. The caller must not modify claims afterwards.
func (c *claimsCache) put(token string, claims *jwt.AccountClaims) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.token, c.claims = token, claims
}

// formatFreshCreds formats the .creds file of a JWT just signed here for the
// seed just generated. It writes the same bytes as jwt.FormatUserConfig
// (TestFormatFreshCredsMatchesLibrary) without the library's decoding and
// signature check of the JWT, which cost more than signing it.
func formatFreshCreds(userJWT string, seed []byte) ([]byte, error) {
	decorated, err := jwt.DecorateSeed(seed)
	if err != nil {
		return nil, mulchat.Errorf(mulchat.EINTERNAL, "cannot format the generated seed")
	}
	var b strings.Builder
	b.Grow(len(userJWT) + len(decorated) + 64)
	b.WriteString("-----BEGIN NATS USER JWT-----\n")
	b.WriteString(userJWT)
	b.WriteString("\n------END NATS USER JWT------\n\n")
	b.Write(decorated)
	return []byte(b.String()), nil
}

// CredsFile formats a standard NATS .creds file holding the JWT and seed.
func CredsFile(userJWT string, seed []byte) ([]byte, error) {
	b, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		return nil, mulchat.Errorf(mulchat.EINVALID, "cannot format a creds file: the JWT or seed is not valid")
	}
	return b, nil
}
