package httpapi

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// routes declares every route of the server in one place.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, h http.HandlerFunc) {
		mux.Handle(pattern, s.instrument(pattern, h))
	}

	handle("GET /healthz", s.handleHealthz)
	handle("GET /readyz", s.handleReadyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}))

	const v1 = "/api/v1"
	handle("POST "+v1+"/users", s.handleRegister)
	handle("POST "+v1+"/login", s.handleLogin)
	handle("POST "+v1+"/logout", s.authed(s.handleLogout))

	handle("GET "+v1+"/me", s.authed(s.handleMe))
	handle("POST "+v1+"/me/credentials", s.authed(s.handleIssueCredential))
	handle("POST "+v1+"/me/credentials/renew", s.authed(s.handleRenewCredential))
	handle("DELETE "+v1+"/me/credentials", s.authed(s.handleRevokeCredential))
	handle("GET "+v1+"/me/sessions", s.authed(s.handleListSessions))
	handle("DELETE "+v1+"/me/sessions/{id}", s.authed(s.handleKickSession))

	handle("GET "+v1+"/rooms", s.authed(s.handleListRooms))
	handle("POST "+v1+"/rooms", s.authed(s.handleCreateRoom))
	handle("GET "+v1+"/rooms/{id}", s.authed(s.handleGetRoom))
	handle("DELETE "+v1+"/rooms/{id}", s.authed(s.handleDeleteRoom))
	handle("POST "+v1+"/rooms/{id}/join", s.authed(s.handleJoinRoom))
	handle("POST "+v1+"/rooms/{id}/leave", s.authed(s.handleLeaveRoom))
	handle("GET "+v1+"/rooms/{id}/members", s.authed(s.handleListMembers))
	handle("POST "+v1+"/rooms/{id}/members", s.authed(s.handleAddMember))
	handle("DELETE "+v1+"/rooms/{id}/members/{user_id}", s.authed(s.handleRemoveMember))
	handle("GET "+v1+"/rooms/{id}/messages", s.authed(s.handleMessages))

	// Anything else under /api answers a JSON 404 rather than the mux's text.
	handle("/api/", s.handleNotFound)
	if s.cfg.Static != nil {
		mux.Handle("/", s.cfg.Static)
	}
	return mux
}
