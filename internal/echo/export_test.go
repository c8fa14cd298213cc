package echo

// BeforeHandle has f called before each message a call's goroutine handles, with the caller's name and the
// message's type: a test makes it panic to see that a panic ends one call only.
func BeforeHandle(e *Echo, f func(caller, typ string)) { e.beforeHandle = f }
