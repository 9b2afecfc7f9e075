package credmigrate

import (
	"database/sql"
	"math/rand/v2"
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
