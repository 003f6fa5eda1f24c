package member

// ControlBytes is the most a client sends a member in a burst of HTTP/2 control frames alone,
// none of which is a request: a gRPC client answers data with a WINDOW_UPDATE (13 bytes) and a
// PING (17 bytes) frame, and its keepalive is a PING. Over TLS they come in one record, with up
// to 29 bytes of its own (TLS 1.2 with AES-GCM). The smallest etcd request is larger: a
// HEADERS and a DATA frame of at least 33 bytes, plus its record over TLS. A member whose
// scheme is unknown is taken as plain, so that no request is taken for control frames.
func ControlBytes(scheme Scheme) int64 {
	const frames = 13 + 17
	if scheme == SchemeTLS {
		return frames + 29
	}
	return frames
}
