package main

import "testing"

// TestSpliceKeepsTheOtherSection: `-only mongo -out FILE` replaces the
// Mongo section of FILE and keeps the MariaDB one, and the other way round.
func TestSpliceKeepsTheOtherSection(t *testing.T) {
	const maria, mongo = "# Failover\n\nmaria rows\n", "## MongoDB under the control plane\n\nold rows\n\n## MongoDB: no control plane\n\nold\n"
	for _, c := range []struct {
		name, old, rep, only, want string
	}{
		{"mongo over both", maria + "\n" + mongo, "## MongoDB new\n", "mongo", maria + "\n## MongoDB new\n"},
		{"mariadb over both", maria + "\n" + mongo, "# Failover\n\nnew\n", "mariadb", "# Failover\n\nnew\n\n" + mongo},
		{"mongo over mariadb only", maria, "## MongoDB new\n", "mongo", maria + "\n## MongoDB new\n"},
		{"mariadb over mongo only", mongo, "# new\n", "mariadb", "# new\n\n" + mongo},
		{"mongo over mongo only", mongo, "## MongoDB new\n", "mongo", "## MongoDB new\n"},
		{"mongo over empty", "", "## MongoDB new\n", "mongo", "## MongoDB new\n"},
	} {
		if got := splice(c.old, c.rep, c.only); got != c.want {
			t.Errorf("%s: got\n%q\nwant\n%q", c.name, got, c.want)
		}
	}
}
