"""What the client reads: templates and locale files, money and dates, SMS encoding, USSD paging."""
