//go:build tools

// Package tools pins Alertmanager, whose own Telegram receiver the chart's
// alerts go through; the tests run it against the Telegram fake.
package tools

import _ "github.com/prometheus/alertmanager/cmd/alertmanager"
