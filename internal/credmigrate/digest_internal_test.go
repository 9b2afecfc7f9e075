package credmigrate

import (
	"cmp"
	"database/sql"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"
)

// The digest of a set does not depend on how it is batched or ordered, and
// a batch redone by the catch-up replaces its part exactly.
func TestDigestComposes(t *testing.T) {
	creds := make([]cred, 5)
	for i := range creds {
		creds[i].JWT = sql.NullString{String: string(rune('a' + i)), Valid: true}
	}
	var all digest256
	for i, c := range creds {
		all.add(c.digest(int64(i + 1)))
	}
	var b1, b2 digest256
	for i := 4; i >= 0; i-- {
		if i < 2 {
			b1.add(creds[i].digest(int64(i + 1)))
		} else {
			b2.add(creds[i].digest(int64(i + 1)))
		}
	}
	var sum digest256
	sum.add(b2)
	sum.add(b1)
	if sum != all {
		t.Fatalf("batched %s, whole %s", sum, all)
	}
	other := creds[0]
	other.JWT.String = "changed"
	var changed digest256
	changed.add(other.digest(1))
	changed.add(creds[1].digest(2))
	if changed == b1 {
		t.Fatal("a changed field does not change the digest")
	}
	// Carries propagate across limbs.
	d := digest256{0, 0, 0, ^uint64(0)}
	d.add(digest256{0, 0, 0, 1})
	if d != (digest256{0, 0, 1, 0}) {
		t.Fatalf("carry: %v", d)
	}
}

func TestCanonicalSQLiteTime(t *testing.T) {
	for s, want := range map[string]bool{
		"2025-03-04 05:06:07.123456":  true,
		"2025-03-04 05:06:07":         false,
		"2025-03-04T05:06:07.123456":  false,
		"2025-03-04 05:06:07.1234567": false,
		"2025-03-04 05:06:07.12345x":  false,
		"2025-02-29 05:06:07.123456":  false, // not a leap year: refused
		"2025-13-04 05:06:07.123456":  false,
		"2025-03-04 24:06:07.123456":  false,
		"2024-02-29 23:59:59.999999":  true,
	} {
		var n nullTime
		if err := n.Scan(s); err != nil {
			if want {
				t.Fatalf("%q: %v", s, err)
			}
			continue
		}
		if n.canon != want {
			t.Errorf("%q: canon %v, want %v", s, n.canon, want)
		}
		if n.canon && n.Time.Format(SQLiteTimeFormat) != s {
			t.Errorf("%q formats as %q", s, n.Time.Format(SQLiteTimeFormat))
		}
	}
}

// parseCanonicalSQLiteTime agrees with time.Parse on the canonical form.
func TestParseCanonicalSQLiteTime(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for range 10000 {
		want := time.Unix(r.Int64N(1<<36)-1<<35, r.Int64N(1e9)).UTC().Truncate(time.Microsecond)
		s := want.Format(SQLiteTimeFormat)
		got, ok := parseCanonicalSQLiteTime(s)
		ref, err := time.Parse(SQLiteTimeFormat, s)
		if !ok || err != nil || !got.Equal(ref) || !got.Equal(want) {
			t.Fatalf("%q: fast %v %v, time.Parse %v %v", s, got, ok, ref, err)
		}
	}
}

func TestPairsJSON(t *testing.T) {
	if got := pairsJSON([]userUpdate{{id: 3, credID: 10}, {id: 12, credID: 7}}); got != `{"3":10,"12":7}` {
		t.Fatal(got)
	}
}

// sortKeyUses sorts as one sort would, on both its paths (one sort below
// 1<<14 keys, two halves merged above), with duplicate hashes of several
// users among the keys.
func TestSortKeyUses(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2)) // the two-core path on any machine
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{0, 1, 100, 1<<14 - 1, 1 << 14, 100001} {
		uses := make([]keyUse, n)
		for i := range uses {
			uses[i] = keyUse{hash: r.Uint64N(uint64(n/3 + 1)), uid: r.Int64N(1000)}
		}
		want := slices.Clone(uses)
		slices.SortFunc(want, func(a, b keyUse) int { return cmp.Or(cmp.Compare(a.hash, b.hash), cmp.Compare(a.uid, b.uid)) })
		if got := sortKeyUses(uses); !slices.Equal(got, want) {
			t.Fatalf("%d keys: sorted differently", n)
		}
	}
}

// A digest term is HighwayHash-256 under the fixed digestKey: the same
// credential gives the same term in every run (verify-nats-credentials
// compares with a run's report), pinned here.
func TestDigestTermIsStable(t *testing.T) {
	c := cred{JWT: sql.NullString{String: "eyJ0eXAiOiJKV1QifQ.e30.sig", Valid: true}, PublicKey: sql.NullString{String: "UABC", Valid: true},
		ExpiresAt: nullTime{Time: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC), Valid: true}}
	if got := c.digest(42).String(); got != pinnedTerm {
		t.Fatalf("digest term %s, want %s", got, pinnedTerm)
	}
}

// pinnedTerm is the term above, as this version computes it.
const pinnedTerm = "7db91ebe003a384094ad01c20ae22cab6ccb54accdab000c6bc7c79f684ea3c6"
