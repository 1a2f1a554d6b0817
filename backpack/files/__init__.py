"""The file service: stored files, their content types, safe names and thumbnails."""
