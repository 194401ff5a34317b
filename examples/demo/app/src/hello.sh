#!/usr/bin/env bash
echo "hello from ${APP_NAME:-demo}"
