// Package resolver owns the desired endpoint set: the Endpoint value type, the parsing of
// `--endpoints`, the loop check, and the sources that publish the set to the health manager over
// a latest-wins channel: a static list, the endpoints file, SRV discovery (miekg/dns) refreshed by
// TTL, whose `_etcd-client-ssl` members must pass member.Verify, and following the cluster's
// member list. It builds on member for everything said to one member, and imports nothing else
// from the rest of the project.
package resolver
