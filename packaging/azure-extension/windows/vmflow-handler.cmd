@echo off
rem The Windows guest agent runs the manifest's commands from the handler
rem directory (C:\Packages\Plugins\<Publisher>.<Type>\<Version>\): this passes
rem the operation to vmflow.exe beside this file and returns its exit code.
"%~dp0vmflow.exe" extension %*
exit /b %ERRORLEVEL%
