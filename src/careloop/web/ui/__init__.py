"""careloop's web pages: the clinician worklist, the patient portal and the governance console.

Served by careloop itself under /app, through the same sign-in, the same access layer and the
same audit as the API; rendered on the server so the pages run no script.
"""
