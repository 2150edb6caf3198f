package sim

// SetRefuseTokens makes every bearer token, even a just generated one, be
// refused with "Invalid Token" on the data APIs (true), or restores normal
// checking (false). generateToken itself goes on answering and counting
// generations. It models the production failure where CloudAgent refuses
// each fresh token, which must not make the proxy spend its hourly
// generations.
func (s *Server) SetRefuseTokens(refuse bool) { s.refuseTokens.Store(refuse) }
