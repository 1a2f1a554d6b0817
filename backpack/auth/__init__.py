"""Users of a backpack: passwords, sessions, verification and reset mail, OAuth sign-in."""
