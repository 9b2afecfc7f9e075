package client

// SecretsForTest returns the client's secrets so that a test can check that
// none of them reached a log.
func SecretsForTest(c *Client) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]string{"token": c.token, "jwt": c.cred.JWT}
	if c.kp != nil {
		seed, _ := c.kp.Seed()
		out["seed"] = string(seed)
	}
	return out
}
