"""The reference token service: OAuth2 client credentials, RS256 JWTs and their JWKS."""
