package sqlstore

import (
	"context"
	"strings"

	"github.com/mulchat/mulchat"
)

var _ mulchat.APITokenUserReader = (*queries)(nil)

// apiTokenWithUserQuery joins a token to its user: the columns of
// apiTokenColumns, then those of userColumns.
var apiTokenWithUserQuery = `SELECT ` + prefixColumns("t.", apiTokenColumns) + `, ` + prefixColumns("u.", userColumns) + `
FROM api_tokens t JOIN users u ON u.id = t.user_id
WHERE t.token_hash = $1`

// prefixColumns qualifies a comma-separated column list with a table alias.
func prefixColumns(alias, columns string) string {
	return alias + strings.Join(strings.Fields(strings.ReplaceAll(columns, ",", " ")), ", "+alias)
}

// APITokenWithUser returns a bearer token and its user in one statement (the
// HTTP API authenticates every request with it).
func (q *queries) APITokenWithUser(ctx context.Context, tokenHash string) (*mulchat.APIToken, *mulchat.User, error) {
	var t mulchat.APIToken
	var u mulchat.User
	err := q.one(ctx, errMsgs{notFound: "API token not found"}, apiTokenWithUserQuery, []any{tokenHash},
		func(s scanner) error {
			dests := append([]any{&t.ID, &t.UserID, &t.TokenHash, timeDest{&t.CreatedAt}, timeDest{&t.ExpiresAt},
				nullTimeDest{&t.RevokedAt}, stringDest{&t.UserAgent}, stringDest{&t.IPAddress}}, userDests(&u)...)
			return s.Scan(dests...)
		})
	if err != nil {
		return nil, nil, err
	}
	return &t, &u, nil
}
