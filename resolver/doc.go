// Package resolver owns the desired endpoint set: the Endpoint value type, the parsing of
// `--endpoints`, and the services that publish the set (a static list today) to the health
// manager over a latest-wins channel. It imports nothing from the rest of the project.
package resolver
