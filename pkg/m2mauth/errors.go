// Package m2mauth is the Go library for services that use m2m-operator: resource servers verify
// access tokens locally against the token server's JWKS (Verifier, Authenticate, Middleware), and
// clients get tokens with the credentials of a mounted Secret that keeps working when the secret
// rotates (NewTokenSource), and send them with an HTTP client that replaces a token that a
// resource server refuses (NewClient).
package m2mauth

import "errors"

// Errors returned by Authenticate, wrapped with detail. Test them with errors.Is.
var (
	// ErrMalformed: the token is not a well-formed JWT.
	ErrMalformed = errors.New("m2mauth: malformed token")
	// ErrAlgorithm: the token's alg is none, an HMAC, not one the verifier accepts, or not the
	// algorithm of the key its kid names.
	ErrAlgorithm = errors.New("m2mauth: unacceptable signing algorithm")
	// ErrType: the token's typ header is not at+jwt (RFC 9068), nor JWT where that is allowed.
	ErrType = errors.New("m2mauth: not an access token")
	// ErrUnknownKey: the token's kid is not in the JWKS, even after fetching it again.
	ErrUnknownKey = errors.New("m2mauth: unknown signing key")
	// ErrSignature: the signature does not verify.
	ErrSignature = errors.New("m2mauth: invalid signature")
	// ErrExpired: the token has expired.
	ErrExpired = errors.New("m2mauth: token expired")
	// ErrNotYetValid: the token's nbf or iat is in the future.
	ErrNotYetValid = errors.New("m2mauth: token not valid yet")
	// ErrTooOld: the token was issued longer ago than the MaxTokenAge allows.
	ErrTooOld = errors.New("m2mauth: token too old")
	// ErrIssuer: the token is from another issuer.
	ErrIssuer = errors.New("m2mauth: wrong issuer")
	// ErrAudience: the token is not for the required audience.
	ErrAudience = errors.New("m2mauth: wrong audience")
	// ErrMissingScope: the token lacks a required scope.
	ErrMissingScope = errors.New("m2mauth: missing scope")
	// ErrJWKS: the JWKS could not be fetched or read.
	ErrJWKS = errors.New("m2mauth: JWKS unavailable")
)
