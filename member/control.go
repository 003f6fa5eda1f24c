package member

// ClientControlBytes is the most a client sends a member in a burst of HTTP/2 control frames
// alone, none of which is a request: a gRPC client answers data with a WINDOW_UPDATE (13
// bytes) and a PING (17 bytes) frame, and its keepalive is a PING. Over TLS they come in one
// record, with up to 29 bytes of its own (TLS 1.2 with AES-GCM). The smallest etcd request is
// larger: a HEADERS and a DATA frame of at least 33 bytes, plus its record over TLS. A member
// whose scheme is unknown is taken as plain, so that no request is taken for control frames.
func ClientControlBytes(scheme Scheme) int64 {
	const frames = 13 + 17
	if scheme == SchemeTLS {
		return frames + tlsRecord
	}
	return frames
}

// MemberControlBytes is the most a member sends a client in a burst of HTTP/2 control frames
// alone, none of which answers a request: a gRPC server answers a request's DATA frame with up
// to two WINDOW_UPDATEs (13 bytes each) and a PING of its own (17 bytes, its bandwidth
// estimate), and answers the client's PING (17 bytes). Its reader queues the PING's answer
// apart from the others, so over TLS they may leave in two records. The smallest etcd answer
// alone is larger in plain (a Put's: 63 bytes of frames); over TLS it is not, and such an
// answer alone in a sample is not taken for one. A member whose scheme is unknown is taken as
// TLS, so that no control frames are taken for an answer.
func MemberControlBytes(scheme Scheme) int64 {
	const frames = 13 + 13 + 17 + 17
	if scheme == SchemePlain {
		return frames
	}
	return frames + 2*tlsRecord
}

// tlsRecord is the most a TLS record adds to what it carries: TLS 1.2 with AES-GCM, a 5-byte
// header, an 8-byte explicit nonce and a 16-byte tag.
const tlsRecord = 29
