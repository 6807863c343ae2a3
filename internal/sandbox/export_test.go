package sandbox

// Descendants lists the processes below pid (for the tests).
var Descendants = descendants

// OwnedBy lists the processes of token's sandboxes (for the tests).
var OwnedBy = ownedBy
