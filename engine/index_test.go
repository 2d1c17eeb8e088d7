package engine

// The engine's tests check its indexes after every step, and every indexed lookup against
// the walk of every VM it replaces (see checkIndexes).
func init() { checkIndexes = true }
