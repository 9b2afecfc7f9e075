// Package mulchat holds mulchat's domain: users and their NATS credentials,
// rooms and membership, auth sessions and messages, the Store interface and
// the one error type with codes. It imports only the standard library; the
// packages under internal/ implement it, and only cmd/mulchat wires them.
package mulchat
