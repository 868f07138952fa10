"""Who is calling, and what they may do.

- `callers`: the caller of a request or socket, from its bearer credential;
- `tokens`: citelink's own access and refresh tokens (HS256);
- `platform_tokens`: tokens a host platform mints for its users;
- `api_keys`: keys for services, stored hashed;
- `passwords`: argon2id hashes, bounded in number at once;
- `throttle`: sign-in throttling and the socket frame budget;
- `cors`: which other origins' pages may call the API and open sockets.
"""
