package listener

import (
	"io"
	"net"
)

// pipe copies bytes both ways between client and backend until both directions are done. A
// clean end of one direction is passed on as a half-close and the other direction keeps
// flowing; an error in either direction closes both connections. It returns the bytes sent
// each way and the first error. Both arguments stay *net.TCPConn so io.Copy can splice.
func pipe(client, backend *net.TCPConn) (up, down int64, err error) {
	downDone := make(chan copyResult, 1)
	go copyDown(downDone, client, backend)
	up, err = copyHalf(backend, client)
	d := <-downDone
	client.Close()
	backend.Close()
	if err == nil {
		err = d.err
	}
	return up, d.n, err
}

type copyResult struct {
	n   int64
	err error
}

// copyDown is the backend-to-client direction of pipe, on its own goroutine; a named function
// so that goroutine dumps say what it is.
func copyDown(done chan<- copyResult, client, backend *net.TCPConn) {
	n, err := copyHalf(client, backend)
	done <- copyResult{n, err}
}

// copyHalf copies src to dst until EOF, then half-closes: FIN to dst, no more reads from src.
// On an error it closes both, which also ends the copy in the other direction.
func copyHalf(dst, src *net.TCPConn) (int64, error) {
	n, err := io.Copy(dst, src)
	if err == nil {
		err = dst.CloseWrite()
		src.CloseRead()
	}
	if err != nil {
		dst.Close()
		src.Close()
	}
	return n, err
}
