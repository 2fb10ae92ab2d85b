"""Where alerts go: Falco JSON or text lines on a stream or appended to a file (`stream`,
`formats`), and Falco's end-of-run summary (`summary.AlertStats`)."""
