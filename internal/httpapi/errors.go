package httpapi

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/mulchat/mulchat"
)

// statusByCode maps mulchat error codes to HTTP status codes. It is the only
// place the API decides a status for an error.
var statusByCode = map[string]int{
	mulchat.EINVALID:        http.StatusBadRequest,
	mulchat.EUNAUTHORIZED:   http.StatusUnauthorized,
	mulchat.EFORBIDDEN:      http.StatusForbidden,
	mulchat.ENOTFOUND:       http.StatusNotFound,
	mulchat.ECONFLICT:       http.StatusConflict,
	mulchat.ETOOLARGE:       http.StatusRequestEntityTooLarge,
	mulchat.ERATELIMITED:    http.StatusTooManyRequests,
	mulchat.ENOTIMPLEMENTED: http.StatusNotImplemented,
	mulchat.EUNAVAILABLE:    http.StatusServiceUnavailable,
	mulchat.EINTERNAL:       http.StatusInternalServerError,
}

// errorStatus returns the HTTP status for err's code.
func errorStatus(err error) int {
	if st, ok := statusByCode[mulchat.ErrorCode(err)]; ok {
		return st
	}
	return http.StatusInternalServerError
}

// retryAfterError is a rate-limit error carrying how long the client should
// wait; writeError turns it into a Retry-After header.
type retryAfterError struct {
	err   *mulchat.Error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeError writes err as {"error":{"code","message"}}. Only internal errors
// are logged; their text is never sent to the client.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := mulchat.ErrorCode(err)
	if _, ok := statusByCode[code]; !ok {
		code = mulchat.EINTERNAL
	}
	status := errorStatus(err)
	if code == mulchat.EINTERNAL {
		s.logger.Error("internal error", slog.String("method", r.Method), slog.String("route", r.Pattern), slog.Any("err", err))
	}
	var ra *retryAfterError
	if errors.As(err, &ra) {
		secs := int((ra.after + time.Second - 1) / time.Second)
		if secs < 1 {
			secs = 1
		}
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: mulchat.ErrorMessage(err)}})
}
