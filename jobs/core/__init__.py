"""What every part of the job system stands on: settings, the SQL session, the stages and their params,
the request and view types, and the checks on text and file locations. Imports nothing else of `jobs`."""
