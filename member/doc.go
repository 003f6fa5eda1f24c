// Package member owns talking to one etcd member on its client port: the scheme it serves, the
// TLS policy for members (Policy) and the one handshake (HandshakeTLS), the verification that a
// member holds the key of a certificate that verifies (Verify), the HTTP/1.1 exchange with its
// endpoints, written by hand (Client: a new connection per probe or member-list request;
// Session: the heartbeats' kept-alive connection), and the one answer to what a failed dial,
// probe or heartbeat says about the member (Classify). It knows addresses and names, not
// endpoint sets or availability: those are resolver's and health's, which build on it. It
// imports nothing from the rest of the project.
package member
