package rules

// SetCompileHook makes f hear of every expression compiled, until the
// returned function is called. Tests only: the hook is not synchronized.
func SetCompileHook(f func(src string)) (restore func()) {
	old := compileHook
	compileHook = f
	return func() { compileHook = old }
}
