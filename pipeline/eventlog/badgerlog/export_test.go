package badgerlog

// SetSpaceProbe replaces how db measures free space and the maps' holes.
func SetSpaceProbe(db *DB, probe func() (free, holes int64)) { db.space.override = probe }
