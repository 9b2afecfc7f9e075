package password

import (
	"strings"
	"testing"
)

func TestHashVerify(t *testing.T) {
	h, err := Hash("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("unexpected PHC prefix: %s", h)
	}
	if strings.Contains(h, "correct horse") {
		t.Fatal("hash contains the password")
	}
	ok, err := Verify(h, "correct horse battery")
	if err != nil || !ok {
		t.Fatalf("Verify(right) = %v, %v", ok, err)
	}
	ok, err = Verify(h, "correct horse batterY")
	if err != nil || ok {
		t.Fatalf("Verify(wrong) = %v, %v", ok, err)
	}
	if NeedsRehash(h) {
		t.Fatal("fresh hash needs rehash")
	}
	h2, _ := Hash("correct horse battery")
	if h == h2 {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
}

func TestOtherParamsVerifyAndNeedRehash(t *testing.T) {
	h, err := HashWith("pw-123456789", Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32})
	if err != nil {
		t.Fatal(err)
	}
	ok, err := Verify(h, "pw-123456789")
	if err != nil || !ok {
		t.Fatalf("Verify = %v, %v", ok, err)
	}
	if !NeedsRehash(h) {
		t.Fatal("weak hash does not need rehash")
	}
}

func TestMalformedHashes(t *testing.T) {
	good, _ := HashWith("x", Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32})
	parts := strings.Split(good, "$")
	cases := map[string]string{
		"empty":          "",
		"plaintext":      "hunter2",
		"bcrypt":         "$2b$12$abcdefghijklmnopqrstuuJ0v1e8m1Qb8m1Qb8m1Qb8m1Qb8m1Qb8m",
		"argon2i":        strings.Replace(good, "argon2id", "argon2i", 1),
		"version":        strings.Replace(good, "v=19", "v=16", 1),
		"no params":      "$argon2id$v=19$$" + parts[4] + "$" + parts[5],
		"huge memory":    "$argon2id$v=19$m=4294967295,t=1,p=1$" + parts[4] + "$" + parts[5],
		"zero time":      "$argon2id$v=19$m=64,t=0,p=1$" + parts[4] + "$" + parts[5],
		"zero threads":   "$argon2id$v=19$m=64,t=1,p=0$" + parts[4] + "$" + parts[5],
		"many threads":   "$argon2id$v=19$m=64000,t=1,p=300$" + parts[4] + "$" + parts[5],
		"bad salt":       "$argon2id$v=19$m=64,t=1,p=1$!!!$" + parts[5],
		"short hash":     "$argon2id$v=19$m=64,t=1,p=1$" + parts[4] + "$AAAA",
		"extra field":    good + "$x",
		"negative":       "$argon2id$v=19$m=-1,t=1,p=1$" + parts[4] + "$" + parts[5],
		"duplicate only": "$argon2id$v=19$m=64,m=64,t=1$" + parts[4] + "$" + parts[5],
		"unknown param":  "$argon2id$v=19$m=64,t=1,p=1,x=2$" + parts[4] + "$" + parts[5],
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			ok, err := Verify(h, "x")
			if err == nil || ok {
				t.Fatalf("Verify(%q) = %v, %v; want error", h, ok, err)
			}
			if !NeedsRehash(h) {
				t.Fatal("malformed hash does not need rehash")
			}
		})
	}
}

func TestVerifierDummy(t *testing.T) {
	v, err := NewVerifier()
	if err != nil {
		t.Fatal(err)
	}
	v.VerifyDummy("anything")
}

// BenchmarkHash measures one argon2id hash at the default parameters, the
// baseline for login throughput in BENCHMARKS.md.
func BenchmarkHash(b *testing.B) {
	for b.Loop() {
		if _, err := Hash("benchmark password"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	h, _ := Hash("benchmark password")
	for b.Loop() {
		if ok, _ := Verify(h, "benchmark password"); !ok {
			b.Fatal("mismatch")
		}
	}
}
