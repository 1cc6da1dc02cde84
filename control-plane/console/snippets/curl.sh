curl -H "Authorization: Bearer {{KEY}}" {{ORIGIN}}/api/me
