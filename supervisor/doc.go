// Package supervisor builds and runs the gateway: it binds the listening socket, creates the
// channels and the shared health table, wires the services into a suture tree (listener,
// resolver, health), maps suture's events to log lines, and drains connections on shutdown.
package supervisor
